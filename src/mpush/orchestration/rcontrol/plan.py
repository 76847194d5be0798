"""The reconcile rules: from one snapshot of declared and observed state, the decisions to make.

A pure function (no I/O), so every rule is tested on its own. For each deployment, in order:

1. **Gone**: an assignment whose deployment is no longer declared, or that cannot be read, is
   retired; one on a dead host (heartbeat expired, judged only once the controller has watched
   for ``host_grace``) is retired as *rescheduled* — rule 2 places its replacement.
2. **Up**: while fewer than ``replicas`` active instances run the current release on a host
   that is not drained, activate a standby instance of that release that is registered and
   waiting (oldest first), else place a new one. Placement picks, among live hosts with the
   deployment's labels and free capacity that are neither drained nor overloaded, the one with
   the fewest instances of this deployment (spreading), then the most free capacity, then the
   name. While instances *to move* remain (of an older release, or on a drained host), active
   instances may exceed ``replicas`` by ``max_surge``; otherwise never.
3. **Standby pool**: standby instances of an older release or on a drained host are retired;
   new ones are placed until ``standby`` of the current release exist; extra ones are retired.
4. **Down**: instances to move are retired — one not ready at once, a ready one only while at
   least ``replicas - max_unavailable`` others stay ready (new ones ready for ``rollout.min_ready``
   seconds; with ``max_surge`` and ``max_unavailable`` both 0, one may go) — then active
   instances beyond ``replicas``: ones not ready, then the idlest (least CPU), then the newest.
   A retirement is a graceful remote shutdown.
5. **Repeats and give-ups**: an activated instance still standing by gets its push again (the
   controller spaces these); a failing or exited instance is noted once (it stays assigned: a
   restart elsewhere would fail the same way, and counting it keeps a crash loop from spawning
   more).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from mpush.orchestration.rcontrol.spec import Run
from mpush.orchestration.rcontrol.state import (
    ACTIVE,
    STANDBY,
    Declaration,
    Host,
    Placed,
    Snapshot,
    State,
)

__all__ = ["Activate", "Decision", "Note", "Place", "Retire", "plan"]


@dataclass(frozen=True)
class Place:
    deployment: str
    host: str
    role: Literal["active", "standby"]
    release: str
    run: Run
    why: str


@dataclass(frozen=True)
class Activate:
    placed: Placed
    why: str
    repeat: bool = False  # already active, its process still stands by: push again


@dataclass(frozen=True)
class Retire:
    placed: Placed
    kind: Literal["retire", "reschedule"]
    why: str


@dataclass(frozen=True)
class Note:
    """An event with no change to make; ``key`` tells repeats of the same situation apart."""

    kind: str
    key: str
    why: str
    deployment: str = ""
    instance: str = ""
    host: str = ""


Decision = Place | Activate | Retire | Note


def plan(snapshot: Snapshot, *, judge_dead: bool) -> list[Decision]:
    """The decisions that bring ``snapshot`` towards its declarations (see the module doc)."""
    return _Planner(snapshot, judge_dead).run()


class _Planner:
    def __init__(self, snapshot: Snapshot, judge_dead: bool) -> None:
        self.snap = snapshot
        self.judge_dead = judge_dead
        self.decisions: list[Decision] = []
        self.load: Counter[str] = Counter()  # instances assigned per host
        self.spread: Counter[tuple[str, str]] = Counter()  # per (deployment, host)
        self.kept: dict[str, list[Placed]] = {}  # per deployment, after rule 1

    def run(self) -> list[Decision]:
        self._gone()
        for host in self.snap.hosts.values():
            if host.alive and host.overloaded:
                key = f"overloaded {host.name}"
                why = f"host {host.name} takes no new instances: {host.overloaded}"
                self.decisions.append(Note("host-overloaded", key, why, host=host.name))
        for name, declaration in self.snap.declarations.items():
            self._deployment(declaration, self.kept.get(name, []))
        return self.decisions

    # rule 1
    def _gone(self) -> None:
        noted: set[str] = set()
        for placed in self.snap.assignments.values():
            a = placed.assignment
            if a is None:
                self.decisions.append(Retire(placed, "retire", "its assignment cannot be read"))
            elif a.deployment not in self.snap.declarations:
                why = f"deployment {a.deployment} is no longer declared"
                self.decisions.append(Retire(placed, "retire", why))
            elif self._dead(a.host):
                why = f"host {a.host} is dead ({self._silence(a.host)})"
                self.decisions.append(Retire(placed, "reschedule", why))
                if a.host not in noted:
                    noted.add(a.host)
                    self.decisions.append(Note("host-dead", f"dead {a.host}", why, host=a.host))
            else:
                self.load[a.host] += 1
                self.spread[(a.deployment, a.host)] += 1
                self.kept.setdefault(a.deployment, []).append(placed)

    def _alive(self, host: str) -> bool:
        found = self.snap.hosts.get(host)
        return found is not None and found.alive

    def _dead(self, host: str) -> bool:
        return self.judge_dead and not self._alive(host)

    def _moving(self, placed: Placed, release: str) -> bool:
        """An instance to replace: of an older release, or on a drained host."""
        return _release(placed) != release or _host(placed) in self.snap.drained

    def _why_moved(self, placed: Placed, release: str) -> str:
        if _release(placed) != release:
            return f"release {_release(placed)} replaced by {release}"
        return f"host {_host(placed)} is drained"

    def _silence(self, host: str) -> str:
        found = self.snap.hosts.get(host)
        if found is None or found.seen is None:
            return "never heard from"
        return f"no heartbeat for {max(0.0, self.snap.now - found.seen):.1f}s"

    def _state(self, placed: Placed) -> State:
        return self.snap.state(placed.id)

    def _cpu(self, placed: Placed) -> float:
        report = self.snap.report(placed.id)
        return 0.0 if report is None else report.cpu

    def _deployment(self, declaration: Declaration, mine: list[Placed]) -> None:
        name, release = declaration.name, declaration.release
        replicas = declaration.replicas
        spec = declaration.deployment
        active = [p for p in mine if _role(p) == ACTIVE]
        standby = [p for p in mine if _role(p) == STANDBY]
        current = [p for p in active if not self._moving(p, release)]
        outdated = [p for p in active if self._moving(p, release)]
        limit = replicas + (spec.max_surge if outdated else 0)
        n_current, n_active = len(current), len(active)

        # rule 2: up
        waiting = sorted(
            (
                p
                for p in standby
                if not self._moving(p, release)
                and self._state(p) == State.STANDBY
                and self._alive(_host(p))
            ),
            key=lambda p: p.seq,
        )
        while n_current < replicas and n_active < limit:
            if waiting:
                chosen = waiting.pop(0)
                standby.remove(chosen)
                why = f"{n_current} of {replicas} active: standby {chosen.id} activated"
                self.decisions.append(Activate(chosen, why))
            elif not self._place(declaration, ACTIVE, f"{n_current} of {replicas} active"):
                break
            n_current += 1
            n_active += 1

        # rule 3: the standby pool
        pool = [p for p in standby if not self._moving(p, release)]
        for placed in standby:
            if _release(placed) != release:
                why = f"standby of release {_release(placed)}, the deployment's is {release}"
                self.decisions.append(Retire(placed, "retire", why))
            elif self._moving(placed, release):
                why = f"standby on host {_host(placed)}, which is drained"
                self.decisions.append(Retire(placed, "retire", why))
        have = len(pool)
        while have < spec.standby:
            if not self._place(declaration, STANDBY, f"{have} of {spec.standby} standing by"):
                break
            have += 1
        for placed in self._victims(pool)[: max(0, have - spec.standby)]:
            why = f"{have} standing by for a pool of {spec.standby}"
            self.decisions.append(Retire(placed, "retire", why))
            have -= 1

        # rule 4: down
        excess = n_active - replicas
        if outdated:
            self._replace(declaration, outdated, current)
        elif excess > 0:
            for placed in self._victims(current)[:excess]:
                why = f"{n_active} active for {replicas} replicas: {self._why_chosen(placed)}"
                self.decisions.append(Retire(placed, "retire", why))
                n_active -= 1

        # rule 5
        for placed in active:
            if self._state(placed) == State.STANDBY and self._alive(_host(placed)):
                self.decisions.append(Activate(placed, "", repeat=True))
        for placed in mine:
            self._give_up(name, placed)

    def _replace(
        self, declaration: Declaration, outdated: list[Placed], current: list[Placed]
    ) -> None:
        """Retire instances to move, keeping ``replicas - max_unavailable`` available."""
        spec = declaration.deployment
        unavailable = spec.max_unavailable if spec.max_surge or spec.max_unavailable else 1
        floor = declaration.replicas - unavailable
        min_ready = spec.rollout.min_ready
        ready = sum(1 for p in outdated if self._state(p) == State.READY)
        ready += sum(1 for p in current if self._available(p, min_ready))
        for placed in self._victims(outdated):
            counted = self._state(placed) == State.READY
            if counted and ready - 1 < floor:
                break  # the rest are ready too (victims come not ready first)
            why = self._why_moved(placed, declaration.release)
            self.decisions.append(Retire(placed, "retire", why))
            ready -= int(counted)

    def _available(self, placed: Placed, min_ready: float) -> bool:
        """Ready, and for ``min_ready`` seconds: a new instance counts towards the replicas kept
        serving (an old one counts while it is ready)."""
        if self._state(placed) != State.READY:
            return False
        if min_ready <= 0:
            return True
        report = self.snap.report(placed.id)
        if report is None or report.state != State.READY or report.since is None:
            return False  # ready by its registration, before its agent saw it: just now
        return self.snap.now - report.since >= min_ready

    def _victims(self, candidates: Iterable[Placed]) -> list[Placed]:
        """Who goes first: not ready, then the idlest, then the newest."""
        return sorted(
            candidates,
            key=lambda p: (
                self._state(p) in (State.READY, State.STANDBY),
                self._cpu(p),
                -p.seq,
            ),
        )

    def _why_chosen(self, placed: Placed) -> str:
        state = self._state(placed)
        if state not in (State.READY, State.STANDBY):
            return f"{placed.id} is {state.value}"
        return f"{placed.id} is the idlest (cpu {self._cpu(placed) * 100:.1f}% of a core)"

    def _place(
        self, declaration: Declaration, role: Literal["active", "standby"], why: str
    ) -> bool:
        name = declaration.name
        host = self._choose(declaration)
        if host is None:
            labels = declaration.deployment.labels
            wanted = f" with labels {labels}" if labels else ""
            self.decisions.append(
                Note(
                    "unschedulable",
                    f"unschedulable {name} {role}",
                    f"{why}: no live host{wanted} has free capacity (and is neither drained "
                    "nor overloaded)",
                    deployment=name,
                )
            )
            return False
        free = host.capacity - self.load[host.name]
        mine = self.spread[(name, host.name)]
        self.load[host.name] += 1
        self.spread[(name, host.name)] += 1
        detail = f"{why}: {host.name} runs {mine} of {name}'s instances and has {free} free"
        self.decisions.append(
            Place(name, host.name, role, declaration.release, declaration.deployment.run, detail)
        )
        return True

    def _choose(self, declaration: Declaration) -> Host | None:
        wanted = declaration.deployment.labels
        fitting = [
            host
            for host in self.snap.hosts.values()
            if host.alive
            and not host.overloaded
            and host.name not in self.snap.drained
            and self.load[host.name] < host.capacity
            and all(host.labels.get(key) == value for key, value in wanted.items())
        ]
        if not fitting:
            return None
        name = declaration.name
        return min(
            fitting,
            key=lambda h: (self.spread[(name, h.name)], -(h.capacity - self.load[h.name]), h.name),
        )

    def _give_up(self, name: str, placed: Placed) -> None:
        report = self.snap.report(placed.id)
        if report is None or report.state not in (State.FAILING, State.EXITED):
            return
        if report.state == State.FAILING:
            why = (
                f"{placed.id} is failing: {report.restarts} restarts, last exit code "
                f"{report.code}; it is restarted with backoff. Last line: {report.reason or '-'}"
            )
        else:
            why = (
                f"{placed.id} exited with code {report.code}, which a restart cannot fix: not "
                f"restarted. Last line: {report.reason or '-'}"
            )
        self.decisions.append(
            Note(
                "give-up",
                f"give-up {placed.id} {report.state.value} {report.placed}",
                why,
                deployment=name,
                instance=placed.id,
                host=report.host,
            )
        )


def _role(placed: Placed) -> str:
    assert placed.assignment is not None
    return placed.assignment.role


def _release(placed: Placed) -> str:
    assert placed.assignment is not None
    return placed.assignment.release


def _host(placed: Placed) -> str:
    assert placed.assignment is not None
    return placed.assignment.host
