"""Rollouts: what a declaration becomes when its release changes or is rolled back, and the
judgement of a new release's health against the old one's. Pure functions; the declaring
commands and the controller's fenced steps write what they return.

A new release is judged while its rollout is ``progressing`` and ``verifying`` (for
``rollout.verify`` seconds after its last old instance went), from what Redis already holds:

1. **crashes**: an instance of the new release restarted ``max_restarts`` times, or reported
   ``failing`` or ``exited``, by its agent;
2. **readiness**: an instance of the new release not ready ``progress_deadline`` seconds after
   its placement;
3. **errors**: in the deployment's metrics hashes (``rollout.metrics``, by default its service's),
   per release (``NS:release:<release>:metrics:<name>``, written by every instance rcontrol
   starts): answers with a 5xx status (``status:5NN``, or ``errors`` where no status is
   counted), messages set aside as malformed, failed and dead ones, against the observations
   (``count``). Worse: at least ``min_errors`` errors and a ratio above the old release's by
   more than ``error_margin``;
4. **response times**: the p95 of each histogram, both releases with ``min_requests``
   observations. Worse: above ``latency_ratio`` times the old release's (plus 10 ms).

The new release's hashes are emptied when its rollout starts, so its figures are its own since
then; the old release's are its whole life (a baseline that outlives its instances).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from mpush.orchestration.rcontrol.spec import Deployment, canonical
from mpush.orchestration.rcontrol.state import (
    SETTLED,
    Declaration,
    Placed,
    Rollout,
    Snapshot,
    State,
)
from mpush.status.histogram import quantile

__all__ = [
    "Advance",
    "Judged",
    "RollBack",
    "declaration_fields",
    "health",
    "judge",
    "rollback_fields",
    "rollout_fields",
]

_LATENCY_SLACK = 0.010  # seconds a p95 may exceed latency_ratio × the old one's
_BAD = ("malformed", "failed", "dead")

# Figures of one metrics hash of one release: (release, metric name) → its fields.
ReleaseFigures = Mapping[tuple[str, str], Mapping[str, float]]


@dataclass(frozen=True)
class Advance:
    """The rollout moves on to ``state``."""

    state: Literal["verifying", "complete", "rolled-back"]
    why: str


@dataclass(frozen=True)
class RollBack:
    """The new release is worse: go back (or, without ``auto_rollback``, say so once)."""

    why: str
    automatic: bool


Judged = Advance | RollBack


def declaration_fields(deployment: Deployment, replicas: int) -> dict[str, str]:
    """The fields of a declaration that say what runs and how many."""
    scaling = deployment.autoscale
    return {
        "spec": canonical(deployment),
        "replicas": str(replicas),
        "release": deployment.release,
        "autoscaled": "" if scaling is None else f"{scaling.min}..{scaling.max}",
    }


def rollout_fields(
    old: Declaration, new: Deployment, *, now: float, why: str, by: str
) -> dict[str, str]:
    """What else a declaration's fields become when ``new`` (another release) replaces ``old``:
    the rollout, and the declaration a rollback restores — the last settled one."""
    settled = old.rollout is None or old.rollout.state in SETTLED
    if settled or old.previous_release == new.release:
        previous, previous_release = old.spec, old.release
    else:  # replacing a release still under judgement: keep the last one that settled
        previous, previous_release = old.previous, old.previous_release
    rollout = Rollout(
        state="progressing", old=old.release, new=new.release, started=now, since=now,
        why=why, by=by,
    )  # fmt: skip
    return {
        "rollout": rollout.encode(),
        "previous": previous,
        "previous_release": previous_release,
    }


def rollback_fields(
    declaration: Declaration, *, now: float, why: str, by: str
) -> dict[str, str] | None:
    """The fields that restore the previous declaration (and keep this one as the previous, so
    a second rollback undoes the first); None when there is none. The replicas stay (within
    the restored autoscale bounds)."""
    if not declaration.previous:
        return None
    restored = Deployment.model_validate_json(declaration.previous)
    replicas = restored.starting_replicas(declaration.replicas)
    if restored.autoscale is None:
        replicas = declaration.replicas
    rollout = Rollout(
        state="rolling-back", old=declaration.release, new=restored.release, started=now,
        since=now, why=why, by=by,
    )  # fmt: skip
    return {
        **declaration_fields(restored, replicas),
        "previous": declaration.spec,
        "previous_release": declaration.release,
        "rollout": rollout.encode(),
    }


@dataclass(frozen=True)
class Health:
    """One release's figures in the deployment's metrics hashes."""

    observed: float
    errors: float
    p95: dict[str, float]  # per histogram metric with enough observations

    @property
    def ratio(self) -> float:
        return self.errors / max(self.observed, self.errors, 1.0)


def health(
    figures: ReleaseFigures, release: str, metrics: Iterable[str], min_requests: int
) -> Health:
    observed = errors = 0.0
    p95: dict[str, float] = {}
    for metric in metrics:
        fields = figures.get((release, metric), {})
        observed += fields.get("count", 0.0)
        statuses = sum(v for k, v in fields.items() if k.startswith("status:5"))
        errors += max(statuses, fields.get("errors", 0.0))
        errors += sum(fields.get(name, 0.0) for name in _BAD)
        if fields.get("count", 0.0) >= min_requests:
            value = quantile(fields, 0.95)
            if value is not None:
                p95[metric] = value
    return Health(observed, errors, p95)


def judge(declaration: Declaration, snapshot: Snapshot, figures: ReleaseFigures) -> Judged | None:
    """What the deployment's rollout should do now, or None."""
    rollout = declaration.rollout
    if rollout is None or rollout.state in SETTLED:
        return None
    mine = [
        p
        for p in snapshot.assignments.values()
        if p.assignment is not None and p.assignment.deployment == declaration.name
    ]
    if rollout.state == "rolling-back":
        if _replaced(snapshot, declaration, mine):
            return Advance("rolled-back", f"every instance runs release {rollout.new} again")
        return None
    spec = declaration.deployment
    why = _worse(declaration, snapshot, figures, mine, rollout)
    if why is not None:
        return RollBack(why, spec.rollout.auto_rollback)
    if rollout.state == "progressing" and _replaced(snapshot, declaration, mine):
        return Advance("verifying", f"every instance runs release {rollout.new}, and is ready")
    if rollout.state == "verifying" and snapshot.now - rollout.since >= spec.rollout.verify:
        return Advance("complete", f"release {rollout.new} healthy for {spec.rollout.verify:g}s")
    return None


def _replaced(snapshot: Snapshot, declaration: Declaration, mine: list[Placed]) -> bool:
    """Every active instance runs the declared release and enough of them are ready."""
    active = [p for p in mine if p.assignment is not None and p.assignment.role == "active"]
    if any(p.assignment is not None and p.assignment.release != declaration.release
           for p in mine):  # fmt: skip
        return False
    ready = sum(1 for p in active if snapshot.state(p.id) == State.READY)
    return ready >= declaration.replicas


def _worse(
    declaration: Declaration,
    snapshot: Snapshot,
    figures: ReleaseFigures,
    mine: list[Placed],
    rollout: Rollout,
) -> str | None:
    policy = declaration.deployment.rollout
    for placed in mine:
        a = placed.assignment
        if a is None or a.release != rollout.new:
            continue
        report = snapshot.report(placed.id)
        state = snapshot.state(placed.id)
        if report is not None and (
            report.restarts >= policy.max_restarts or state in (State.FAILING, State.EXITED)
        ):
            return (
                f"{placed.id} of release {rollout.new} crashed: {report.restarts} restarts, "
                f"{state.value}, last exit code {report.code} ({report.reason or '-'})"
            )
        waited = snapshot.now - a.placed
        if state not in (State.READY, State.STANDBY) and waited >= policy.progress_deadline:
            return (
                f"{placed.id} of release {rollout.new} not ready {waited:.0f}s after its "
                f"placement ({state.value}; progress_deadline {policy.progress_deadline:g}s)"
            )
    metrics = declaration.deployment.health_metrics
    new = health(figures, rollout.new, metrics, policy.min_requests)
    old = health(figures, rollout.old, metrics, policy.min_requests)
    if new.errors >= policy.min_errors and new.ratio > old.ratio + policy.error_margin:
        return (
            f"release {rollout.new} failed {new.errors:.0f} of {new.observed:.0f} "
            f"({new.ratio:.1%}), release {rollout.old} {old.ratio:.1%} "
            f"(error_margin {policy.error_margin:.0%}; in {', '.join(metrics)})"
        )
    if policy.latency_ratio > 0:
        for metric, p95 in new.p95.items():
            before = old.p95.get(metric)
            if before is not None and p95 > policy.latency_ratio * before + _LATENCY_SLACK:
                return (
                    f"release {rollout.new} answers slower: p95 {p95:.3f}s in {metric}, "
                    f"release {rollout.old} {before:.3f}s (latency_ratio {policy.latency_ratio:g})"
                )
    return None
