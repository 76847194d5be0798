"""rcontrol's reconcile rules (``plan``), one by one, on snapshots built by hand: no Redis."""

from __future__ import annotations

from typing import Literal

from mpush.orchestration.rcontrol.plan import Activate, Decision, Note, Place, Retire, plan
from mpush.orchestration.rcontrol.spec import Deployment, canonical
from mpush.orchestration.rcontrol.state import (
    Assignment,
    Declaration,
    Host,
    Placed,
    Registration,
    Report,
    Snapshot,
    State,
)

SETTINGS = {"in": "{t}:in", "out": ["{t}:out"]}
NOW = 1_000_000.0


def declaration(
    name: str = "web",
    replicas: int = 1,
    *,
    standby: int = 0,
    max_surge: int = 1,
    labels: dict[str, str] | None = None,
    settings: dict[str, object] | None = None,
) -> Declaration:
    spec = Deployment(
        service="lpush",
        settings=settings or SETTINGS,
        replicas=replicas,
        standby=standby,
        max_surge=max_surge,
        labels=labels or {},
    )
    return Declaration(name, spec, replicas, spec.release, 1, canonical(spec))


RELEASE = declaration().release


def host(name: str, capacity: int = 16, **labels: str) -> Host:
    return Host(name, alive=True, seen=NOW, capacity=capacity, labels=labels)


def dead(name: str) -> Host:
    return Host(name, alive=False, seen=NOW - 30)


def placed(
    instance_id: str,
    where: str,
    role: Literal["active", "standby"] = "active",
    *,
    release: str = RELEASE,
    deployment: str = "web",
) -> Placed:
    assignment = Assignment(
        deployment=deployment,
        host=where,
        role=role,
        release=release,
        run=declaration().deployment.run,
        token=1,
        placed=NOW - 100,
    )
    return Placed(instance_id, assignment.encode(), assignment)


def report(p: Placed, state: State, cpu: float = 0.0, **more: object) -> Report:
    assert p.assignment is not None
    more.setdefault("since", NOW - 100)  # in this state for long
    return Report(
        p.id, host=p.assignment.host, state=state, cpu=cpu, placed=p.assignment.placed, **more
    )  # type: ignore[arg-type]


def snapshot(
    declarations: list[Declaration],
    hosts: list[Host],
    instances: list[tuple[Placed, State, float]] = (),  # type: ignore[assignment]
) -> Snapshot:
    return Snapshot(
        now=NOW,
        epoch="e",
        declarations={d.name: d for d in declarations},
        assignments={p.id: p for p, _, _ in instances},
        hosts={h.name: h for h in hosts},
        reports={p.id: report(p, state, cpu) for p, state, cpu in instances},
        labels={},
    )


def of(decisions: list[Decision], kind: type) -> list:  # type: ignore[type-arg]
    return [d for d in decisions if isinstance(d, kind)]


def test_scale_up_from_nothing_spreads_over_the_hosts() -> None:
    decisions = plan(snapshot([declaration(replicas=4)], [host("a"), host("b")]), judge_dead=True)
    places = of(decisions, Place)
    assert [p.host for p in places] == ["a", "b", "a", "b"]
    assert all(p.role == "active" and p.release == RELEASE for p in places)
    assert len(decisions) == 4


def test_the_host_with_most_free_capacity_wins_a_tie() -> None:
    other = placed("api-1", "a", deployment="api")
    snap = snapshot(
        [declaration(replicas=1), declaration("api", 1)], [host("a"), host("b")],
        [(other, State.READY, 0.0)],
    )  # fmt: skip
    assert [p.host for p in of(plan(snap, judge_dead=True), Place)] == ["b"]


def test_a_waiting_standby_is_activated_before_anything_is_placed() -> None:
    one, spare = placed("web-1", "a"), placed("web-2", "b", "standby")
    snap = snapshot(
        [declaration(replicas=2, standby=1)], [host("a"), host("b")],
        [(one, State.READY, 0.1), (spare, State.STANDBY, 0.0)],
    )  # fmt: skip
    decisions = plan(snap, judge_dead=True)
    assert [d.placed.id for d in of(decisions, Activate)] == ["web-2"]
    # the pool is refilled with a new standby, on the host with fewer of web's instances (a tie)
    assert [(p.role, p.host) for p in of(decisions, Place)] == [("standby", "a")]


def test_a_standby_not_registered_yet_is_not_activated() -> None:
    spare = placed("web-1", "a", "standby")
    snap = snapshot([declaration(replicas=1, standby=1)], [host("a")], [(spare, State.STARTING, 0)])
    decisions = plan(snap, judge_dead=True)
    assert not of(decisions, Activate)
    assert [p.role for p in of(decisions, Place)] == ["active"]


def test_scale_down_retires_not_ready_then_idle_then_newest() -> None:
    busy, idle, newest, starting = (placed(f"web-{n}", "a") for n in (1, 2, 3, 4))
    snap = snapshot(
        [declaration(replicas=1)], [host("a")],
        [(busy, State.READY, 0.5), (idle, State.READY, 0.0), (newest, State.READY, 0.0),
         (starting, State.STARTING, 0.0)],
    )  # fmt: skip
    retired = [d.placed.id for d in of(plan(snap, judge_dead=True), Retire)]
    assert retired == ["web-4", "web-3", "web-2"]


def test_a_dead_hosts_instances_are_rescheduled_once_the_host_is_judged() -> None:
    lost = placed("web-1", "b")
    snap = snapshot([declaration(replicas=1)], [host("a"), dead("b")], [(lost, State.READY, 0.0)])
    assert plan(snap, judge_dead=False) == []  # within the grace: wait for its heartbeat
    decisions = plan(snap, judge_dead=True)
    (retire,) = of(decisions, Retire)
    assert (retire.placed.id, retire.kind) == ("web-1", "reschedule")
    assert "host b is dead (no heartbeat for 30.0s)" in retire.why
    assert [p.host for p in of(decisions, Place)] == ["a"]
    assert [n.kind for n in of(decisions, Note)] == ["host-dead"]


def test_labels_and_capacity_limit_placement() -> None:
    snap = snapshot(
        [declaration(replicas=3, labels={"zone": "x"})],
        [host("a", zone="y"), host("b", capacity=1, zone="x"), host("c", capacity=1, zone="x")],
    )
    decisions = plan(snap, judge_dead=True)
    assert sorted(p.host for p in of(decisions, Place)) == ["b", "c"]
    (note,) = of(decisions, Note)
    assert note.kind == "unschedulable"
    assert "labels {'zone': 'x'}" in note.why


def test_instances_of_deleted_or_unreadable_assignments_are_retired() -> None:
    orphan = placed("gone-1", "a", deployment="gone")
    broken = Placed("web-9", "not json", None)
    snap = snapshot([], [host("a")], [(orphan, State.READY, 0.0)])
    snap.assignments[broken.id] = broken
    retired = {d.placed.id: d.why for d in of(plan(snap, judge_dead=True), Retire)}
    assert retired == {
        "gone-1": "deployment gone is no longer declared",
        "web-9": "its assignment cannot be read",
    }


def test_a_new_release_surges_then_replaces_while_keeping_replicas_ready() -> None:
    new = declaration(replicas=2, settings={**SETTINGS, "batch": 10})
    old1, old2 = placed("web-1", "a"), placed("web-2", "b")
    # both old instances ready: one new instance is placed above replicas (max_surge 1)
    snap = snapshot([new], [host("a"), host("b")], [(old1, State.READY, 0), (old2, State.READY, 0)])
    decisions = plan(snap, judge_dead=True)
    assert [(p.release, p.role) for p in of(decisions, Place)] == [(new.release, "active")]
    assert not of(decisions, Retire)
    # the new one is starting: no old one goes yet
    fresh = placed("web-3", "a", release=new.release)
    starting = [(old1, State.READY, 0.0), (old2, State.READY, 0.0), (fresh, State.STARTING, 0.0)]
    assert plan(snapshot([new], [host("a"), host("b")], starting), judge_dead=True) == []
    # the new one is ready: one old instance goes, and the next new one is placed
    ready = [(old1, State.READY, 0.0), (old2, State.READY, 0.0), (fresh, State.READY, 0.0)]
    decisions = plan(snapshot([new], [host("a"), host("b")], ready), judge_dead=True)
    assert len(of(decisions, Retire)) == 1
    assert of(decisions, Retire)[0].placed.id in ("web-1", "web-2")


def test_without_surge_one_old_instance_goes_first() -> None:
    new = declaration(replicas=2, max_surge=0, settings={**SETTINGS, "batch": 10})
    old1, old2 = placed("web-1", "a"), placed("web-2", "b")
    snap = snapshot([new], [host("a"), host("b")], [(old1, State.READY, 0), (old2, State.READY, 0)])
    decisions = plan(snap, judge_dead=True)
    assert len(of(decisions, Retire)) == 1
    assert not of(decisions, Place)


def test_failing_and_exited_instances_are_noted_and_still_count() -> None:
    failing, exited = placed("web-1", "a"), placed("web-2", "a")
    snap = snapshot(
        [declaration(replicas=2)], [host("a")],
        [(failing, State.FAILING, 0.0), (exited, State.EXITED, 0.0)],
    )  # fmt: skip
    decisions = plan(snap, judge_dead=True)
    assert not of(decisions, Place), "a crash loop must not make more instances"
    assert sorted(n.instance for n in of(decisions, Note) if n.kind == "give-up") == [
        "web-1",
        "web-2",
    ]


def test_an_activated_instance_still_standing_by_is_pushed_again() -> None:
    late = placed("web-1", "a")
    snap = snapshot([declaration(replicas=1)], [host("a")], [(late, State.STANDBY, 0.0)])
    (activate,) = of(plan(snap, judge_dead=True), Activate)
    assert activate.repeat
    assert activate.placed.id == "web-1"


def test_a_standby_pool_of_an_old_release_is_replaced() -> None:
    new = declaration(replicas=0, standby=1, settings={**SETTINGS, "batch": 10})
    old = placed("web-1", "a", "standby")
    decisions = plan(snapshot([new], [host("a")], [(old, State.STANDBY, 0)]), judge_dead=True)
    assert [d.placed.id for d in of(decisions, Retire)] == ["web-1"]
    assert [(p.role, p.release) for p in of(decisions, Place)] == [("standby", new.release)]


def test_reports_about_an_older_placement_of_the_same_id_are_ignored() -> None:
    current = placed("web-1", "a")
    snap = snapshot([declaration(replicas=1)], [host("a")], [(current, State.STANDBY, 0.0)])
    snap.reports["web-1"] = Report("web-1", host="a", state=State.STANDBY, placed=NOW - 5000)
    assert snap.report("web-1") is None
    assert not of(plan(snap, judge_dead=True), Activate)


def test_a_registration_counts_before_the_agent_reports_it() -> None:
    """The agent reports at its heartbeat; a standby's registration is enough to activate it,
    unless it belongs to an earlier process of the instance (killed, not expired yet)."""
    spare = placed("web-1", "a", "standby")
    snap = snapshot([declaration(replicas=1, standby=1)], [host("a")], [(spare, State.STARTING, 0)])
    snap.reports["web-1"] = report(spare, State.STARTING, pid=41)
    snap.registrations["web-1"] = Registration("7", 41, standby=True)
    assert [d.placed.id for d in of(plan(snap, judge_dead=True), Activate)] == ["web-1"]
    snap.registrations["web-1"] = Registration("6", 40, standby=True)  # the previous process's
    assert not of(plan(snap, judge_dead=True), Activate)
    snap.reports["web-1"] = report(spare, State.BACKOFF, pid=None)  # the agent knows better
    snap.registrations["web-1"] = Registration("7", 41, standby=True)
    assert snap.state("web-1") == State.BACKOFF


def test_a_drained_host_gets_nothing_and_its_instances_move_gracefully() -> None:
    on_b, spare = placed("web-1", "b"), placed("web-2", "b", "standby")
    snap = snapshot(
        [declaration(replicas=1, standby=1)], [host("a"), host("b")],
        [(on_b, State.READY, 0.0), (spare, State.STANDBY, 0.0)],
    )  # fmt: skip
    snap.drained["b"] = "1 rcontrol drain"
    decisions = plan(snap, judge_dead=True)
    # its standby goes at once; replacements go to a; the ready one stays until one is ready
    assert [(d.placed.id, d.why) for d in of(decisions, Retire)] == [
        ("web-2", "standby on host b, which is drained")
    ]
    assert sorted((p.role, p.host) for p in of(decisions, Place)) == [
        ("active", "a"),
        ("standby", "a"),
    ]
    moved = placed("web-3", "a")
    snap = snapshot(
        [declaration(replicas=1)], [host("a"), host("b")],
        [(on_b, State.READY, 0.0), (moved, State.READY, 0.0)],
    )  # fmt: skip
    snap.drained["b"] = "1 rcontrol drain"
    (retire,) = of(plan(snap, judge_dead=True), Retire)
    assert (retire.placed.id, retire.why) == ("web-1", "host b is drained")


def test_an_overloaded_host_gets_no_new_instances() -> None:
    busy = Host("b", alive=True, seen=NOW, capacity=16, overloaded="load 9.00 on 2 CPUs")
    decisions = plan(snapshot([declaration(replicas=2)], [host("a"), busy]), judge_dead=True)
    assert [p.host for p in of(decisions, Place)] == ["a", "a"]
    (note,) = of(decisions, Note)
    assert (note.kind, note.host) == ("host-overloaded", "b")
    assert "load 9.00 on 2 CPUs" in note.why


def test_max_unavailable_retires_old_instances_before_new_ones_are_ready() -> None:
    new = declaration(replicas=3, max_surge=0, settings={**SETTINGS, "batch": 10})
    new = Declaration(
        new.name, new.deployment.model_copy(update={"max_unavailable": 2}), 3, new.release, 1,
        new.spec,
    )  # fmt: skip
    old = [placed(f"web-{n}", "a") for n in (1, 2, 3)]
    snap = snapshot([new], [host("a")], [(p, State.READY, 0.0) for p in old])
    decisions = plan(snap, judge_dead=True)
    assert len(of(decisions, Retire)) == 2, "3 ready, at least 1 must stay ready"
    assert not of(decisions, Place), "no surge: nothing above replicas"


def test_a_new_instance_counts_once_ready_for_min_ready() -> None:
    new = declaration(replicas=1, settings={**SETTINGS, "batch": 10})
    old, fresh = placed("web-1", "a"), placed("web-2", "a", release=new.release)
    instances = [(old, State.READY, 0.0), (fresh, State.READY, 0.0)]
    snap = snapshot([new], [host("a")], instances)
    snap.reports["web-2"] = report(fresh, State.READY, since=NOW - 1)  # min_ready is 2 s
    assert not of(plan(snap, judge_dead=True), Retire), "not available yet"
    snap.reports["web-2"] = report(fresh, State.READY, since=NOW - 3)
    assert [d.placed.id for d in of(plan(snap, judge_dead=True), Retire)] == ["web-1"]
