"""The judgement of a rollout, no Redis: a new release that crashes, is not ready in time, fails
more requests or answers slower than the old one is rolled back; a healthy one moves on to
verifying and complete; the rollback restores the previous declaration."""

from __future__ import annotations

import dataclasses

from mpush.orchestration.rcontrol.rollouts import (
    Advance,
    RollBack,
    judge,
    rollback_fields,
    rollout_fields,
)
from mpush.orchestration.rcontrol.spec import Deployment
from mpush.orchestration.rcontrol.state import Declaration, Rollout, State
from tests.test_rcontrol_plan import NOW, SETTINGS, declaration, host, placed, report, snapshot

OLD = declaration(replicas=2)
NEW = declaration(replicas=2, settings={**SETTINGS, "batch": 10})


def rolling(state: str = "progressing", since: float = NOW - 5) -> Declaration:
    fields = rollout_fields(OLD, NEW.deployment, now=since, why="settings", by="test")
    rollout = Rollout.model_validate_json(fields["rollout"]).model_copy(update={"state": state})
    return dataclasses.replace(
        NEW, rollout=rollout, previous=fields["previous"], previous_release=OLD.release
    )


def test_a_crashing_new_instance_is_rolled_back_the_old_ones_untouched() -> None:
    old1, old2 = placed("web-1", "a"), placed("web-2", "a")
    fresh = placed("web-3", "a", release=NEW.release)
    snap = snapshot(
        [rolling()], [host("a")],
        [(old1, State.READY, 0), (old2, State.READY, 0), (fresh, State.BACKOFF, 0)],
    )  # fmt: skip
    snap.reports["web-3"] = report(fresh, State.BACKOFF, restarts=2, code=1, reason="Boom")
    verdict = judge(snap.declarations["web"], snap, {})
    assert isinstance(verdict, RollBack)
    assert verdict.automatic
    assert "web-3 of release" in verdict.why
    assert "2 restarts" in verdict.why
    assert "Boom" in verdict.why


def test_a_new_instance_not_ready_by_its_deadline_is_rolled_back() -> None:
    fresh = placed("web-3", "a", release=NEW.release)  # placed 100 s ago
    snap = snapshot([rolling()], [host("a")], [(fresh, State.STARTING, 0)])
    verdict = judge(snap.declarations["web"], snap, {})
    assert isinstance(verdict, RollBack)
    assert "not ready 100s after its placement" in verdict.why


def test_more_errors_than_the_old_release_rolls_back_the_same_rate_does_not() -> None:
    snap = snapshot([rolling()], [host("a")], [])
    bad = {
        (NEW.release, "move"): {"count": 40, "malformed": 20},
        (OLD.release, "move"): {"count": 4000, "malformed": 4},
    }
    verdict = judge(snap.declarations["web"], snap, bad)
    assert isinstance(verdict, RollBack)
    assert "failed 20 of 40 (50.0%)" in verdict.why
    same = {
        (NEW.release, "move"): {"count": 100, "malformed": 10},
        (OLD.release, "move"): {"count": 1000, "malformed": 100},
    }
    assert judge(snap.declarations["web"], snap, same) is None, "bad input is not its fault"


def test_5xx_answers_count_once_whether_raised_or_answered() -> None:
    handler = Deployment(service="handler", settings={"handler": "m:f", "in": "{t}:q"})
    new = Declaration("web", handler, 1, handler.release, 1, "{}")
    rollout = Rollout(state="progressing", old="old", new=handler.release, started=NOW, since=NOW)
    new = dataclasses.replace(new, rollout=rollout, previous="{}", previous_release="old")
    snap = snapshot([new], [host("a")], [])
    figures = {(handler.release, "handler"): {"count": 10, "errors": 6, "status:500": 6}}
    verdict = judge(new, snap, figures)
    assert isinstance(verdict, RollBack)
    assert "failed 6 of 10" in verdict.why


def test_slower_answers_roll_back() -> None:
    snap = snapshot([rolling()], [host("a")], [])
    slow = {"count": 50, "sum": 50 * 2.5, "histo20": 50, "histo_scale": 10.0}
    fast = {"count": 500, "sum": 500 * 0.02, "histo0": 500, "histo_scale": 10.0}
    figures = {(NEW.release, "move"): slow, (OLD.release, "move"): fast}
    verdict = judge(snap.declarations["web"], snap, figures)
    assert isinstance(verdict, RollBack)
    assert "answers slower: p95" in verdict.why


def test_a_healthy_rollout_moves_on_to_verifying_then_complete() -> None:
    one, two = (placed(f"web-{n}", "a", release=NEW.release) for n in (3, 4))
    ready = [(one, State.READY, 0.0), (two, State.READY, 0.0)]
    snap = snapshot([rolling()], [host("a")], ready)
    assert judge(snap.declarations["web"], snap, {}) == Advance(
        "verifying", f"every instance runs release {NEW.release}, and is ready"
    )
    snap = snapshot([rolling("verifying", since=NOW - 5)], [host("a")], ready)
    assert judge(snap.declarations["web"], snap, {}) is None, "verify lasts 30 s"
    snap = snapshot([rolling("verifying", since=NOW - 31)], [host("a")], ready)
    verdict = judge(snap.declarations["web"], snap, {})
    assert isinstance(verdict, Advance)
    assert verdict.state == "complete"


def test_without_auto_rollback_it_is_only_said() -> None:
    spec = NEW.deployment.model_copy(
        update={"rollout": NEW.deployment.rollout.model_copy(update={"auto_rollback": False})}
    )
    quiet = dataclasses.replace(rolling(), deployment=spec)
    fresh = placed("web-3", "a", release=NEW.release)
    snap = snapshot([quiet], [host("a")], [(fresh, State.FAILING, 0)])
    snap.reports["web-3"] = report(fresh, State.FAILING, restarts=5)
    verdict = judge(quiet, snap, {})
    assert isinstance(verdict, RollBack)
    assert not verdict.automatic


def test_rollback_restores_the_previous_declaration_and_can_be_undone() -> None:
    current = rolling()
    fields = rollback_fields(current, now=NOW, why="worse", by="test")
    assert fields is not None
    assert fields["release"] == OLD.release
    assert fields["spec"] == OLD.spec
    assert (fields["previous"], fields["previous_release"]) == (NEW.spec, NEW.release)
    rollout = Rollout.model_validate_json(fields["rollout"])
    assert (rollout.state, rollout.old, rollout.new) == ("rolling-back", NEW.release, OLD.release)
    assert rollback_fields(OLD, now=NOW, why="", by="") is None, "nothing before the first"


def test_a_release_replacing_one_under_judgement_keeps_the_last_settled_to_go_back_to() -> None:
    newer = Deployment(service="lpush", settings={**SETTINGS, "batch": 20}, replicas=2)
    fields = rollout_fields(rolling(), newer, now=NOW, why="again", by="test")
    assert fields["previous_release"] == OLD.release, "not the unproven one"
