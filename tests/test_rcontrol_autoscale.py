"""Autoscaling's arithmetic, no Redis: the p95 from histogram deltas, KEDA's queue formula, HPA's
response-time formula, the larger of the two, and stabilization (up fast, down after a window)."""

from __future__ import annotations

import pytest

from mpush.orchestration.rcontrol.autoscale import Autoscaler, Reading
from mpush.orchestration.rcontrol.spec import Autoscale
from mpush.runtime.metrics import histo_bucket
from mpush.status.histogram import delta, quantile


def hashed(values: list[float], scale: float) -> dict[str, float]:
    """A metrics hash holding ``values`` as the runtime writes them."""
    fields: dict[str, float] = {"count": len(values), "sum": sum(values), "histo_scale": scale}
    for value in values:
        bucket = histo_bucket(value, scale)
        fields[bucket] = fields.get(bucket, 0) + 1
    return fields


def test_the_p95_of_a_window_not_of_all_time() -> None:
    early = hashed([0.01] * 1000, 10.0)  # a long fast past
    late = hashed([0.01] * 1000 + [3.5] * 40, 10.0)  # then a slow spell
    assert quantile(delta(late, early), 0.95) == pytest.approx(3.95, abs=0.01)
    # all-time, the slow spell hardly shows: the window is what matters
    assert quantile(late, 0.95) < 0.1


def test_inside_the_lowest_bucket_the_mean_sets_the_spread() -> None:
    fast = hashed([0.02] * 200, 10.0)  # every value in [0, 1s)
    p95 = quantile(fast, 0.95)
    assert p95 is not None
    assert 0.03 < p95 < 0.05, "about twice the mean, not near the bucket's 1 s edge"
    assert quantile(hashed([11.0] * 10, 10.0), 0.95) == 10.0, "at least the scale"
    assert quantile({"count": 3, "sum": 1.0}, 0.95) is None, "no scale: no answer"
    assert quantile(hashed([], 10.0), 0.95) is None


def test_a_reset_hash_counts_whole() -> None:
    before = hashed([1.0] * 50, 10.0)
    after = hashed([2.0] * 5, 10.0)  # deleted and begun again
    assert delta(after, before)["count"] == 5


QUEUE = Autoscale(min=1, max=6, queue="{t}:q", target=20, scale_down_window=30)


def feed(scaler: Autoscaler, config: Autoscale, replicas: int, at: float, **reading: object) -> int:
    scaler.observe("web", config, replicas, Reading(at, **reading))  # type: ignore[arg-type]
    decided = scaler.decide("web", replicas, at)
    return replicas if decided is None else decided.replicas


def test_queue_length_scales_up_at_once_and_down_after_the_window() -> None:
    scaler = Autoscaler()
    replicas = feed(scaler, QUEUE, 1, 0.0, queue=0)
    assert replicas == 1
    replicas = feed(scaler, QUEUE, replicas, 0.5, queue=90)  # ceil(90 / 20) = 5
    assert replicas == 5
    replicas = feed(scaler, QUEUE, replicas, 1.0, queue=500)  # 25, but at most 6
    assert replicas == 6
    decided = scaler.decide("web", 5, 1.0)
    assert decided is not None
    assert "queue {t}:q 500 / target 20 -> 25" in decided.why
    assert "within 1..6 -> 6" in decided.why
    for at in range(2, 31):  # the queue is empty again, but within the window it was long
        replicas = feed(scaler, QUEUE, replicas, float(at), queue=0)
        assert replicas == 6, at
    replicas = feed(scaler, QUEUE, replicas, 31.5, queue=0)
    assert replicas == 1, "the low figure held for the whole window"


def test_a_new_controller_never_scales_down_before_a_window() -> None:
    scaler = Autoscaler()
    assert feed(scaler, QUEUE, 4, 100.0, queue=0) == 4
    assert feed(scaler, QUEUE, 4, 129.0, queue=0) == 4
    assert feed(scaler, QUEUE, 4, 131.0, queue=0) == 1


def test_activation_and_min() -> None:
    config = Autoscale(min=0, max=3, queue="{t}:q", target=10, activation=5, scale_down_window=0)
    scaler = Autoscaler()
    assert feed(scaler, config, 0, 0.0, queue=5) == 0, "at or below activation: min"
    assert feed(scaler, config, 0, 1.0, queue=6) == 1


def test_scale_up_window_takes_the_lowest_recent_recommendation() -> None:
    config = Autoscale(min=1, max=10, queue="{t}:q", target=10, scale_up_window=2)
    scaler = Autoscaler()
    assert feed(scaler, config, 1, 0.0, queue=0) == 1
    assert feed(scaler, config, 1, 1.0, queue=100) == 1, "a spike within the window"
    assert feed(scaler, config, 1, 2.5, queue=100) == 10, "held for the window"


def test_response_time_asks_for_replicas_in_proportion_after_a_whole_window() -> None:
    config = Autoscale(min=1, max=8, response_time=0.2, window=10, scale_down_window=0)
    scaler = Autoscaler()
    slow = [0.5] * 100  # p95 about 0.55 in the bucket [0.5, 1.0) of a 5 s scale
    seen = hashed([], 5.0)
    replicas = 2
    for second in range(10):  # the window fills: no recommendation from the response time yet
        seen = hashed(slow * (second + 1), 5.0)
        replicas = feed(scaler, config, replicas, float(second), latency=seen)
        assert replicas == 2
    seen = hashed(slow * 12, 5.0)
    replicas = feed(scaler, config, replicas, 10.5, latency=seen)
    p95 = quantile(delta(seen, hashed(slow, 5.0)), 0.95)
    assert p95 is not None
    assert replicas == min(8, -(-2 * p95 // 0.2)), "ceil(replicas × p95 / target)"
    assert replicas > 2
    # a window with no answers at all asks for min
    quiet = Autoscaler()
    for second in range(12):
        last = feed(quiet, config, 3, float(second), latency=seen)
    assert last == 1


def test_the_larger_recommendation_wins() -> None:
    config = Autoscale(min=1, max=8, queue="{t}:q", target=10, response_time=1.0, window=1)
    scaler = Autoscaler()
    fast = hashed([0.01] * 50, 5.0)
    feed(scaler, config, 1, 0.0, queue=0, latency=fast)
    replicas = feed(scaler, config, 1, 2.0, queue=35, latency=hashed([0.01] * 99, 5.0))
    assert replicas == 4, "the queue asks for 4; the fast answers for 1"


def test_the_schema_refuses_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="min: 5 is more than max"):
        Autoscale(min=5, max=2, queue="q")
    with pytest.raises(ValueError, match="give a queue"):
        Autoscale(max=2)
    with pytest.raises(ValueError, match="response_metric: only with a response_time"):
        Autoscale(max=2, queue="q", response_metric="hfiler")
