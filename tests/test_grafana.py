"""The Grafana dashboard shipped in deploy/grafana/mpush.json: loadable as is (a data source
variable, no data source uid of anyone's Grafana), every query valid PromQL, and every series it
asks for one that mpush exports — read from a real exporter and a real service's --metrics-port."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from tests.conftest import RedisEnv
from tests.helpers import Spawner, wait_until
from tests.promtools import metrics_port, scrape

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "mpush.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NS = "{g}:dash"
# What Grafana puts in place of its variables before a query reaches Prometheus.
_VARIABLES = {"$__rate_interval": "1m", "$namespace": NS, "$metric": ".*"}
_SERIES = re.compile(r"\b((?:mpush|process)_[a-z_]+)\b")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in _panels(dashboard) for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def _substituted(expr: str) -> str:
    for name, value in _VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def test_loadable_as_is(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert dashboard.get("id") is None  # Grafana gives one on import
    for panel in _panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    uids = re.findall(r'"uid": "([^"]*)"', DASHBOARD.read_text(encoding="utf-8"))
    assert set(uids) == {"${datasource}", dashboard["uid"]}
    titles = " ".join(p["title"].lower() for p in _panels(dashboard))
    for subject in ("per second", "queue", "p95", "replicas", "errors"):
        assert subject in titles


def test_every_query_is_promql(dashboard: dict[str, Any]) -> None:
    for expr in _queries(dashboard):
        text = _substituted(expr)
        if text.startswith("label_values("):  # a Grafana function around a selector
            text = text.removeprefix("label_values(").rsplit(",", 1)[0]
        promql_parser.parse(text)  # raises ValueError on a bad query
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("sum(rate(x[1m])")


def test_every_series_asked_for_is_exported(
    dashboard: dict[str, Any], standalone_env: RedisEnv, spawn: Spawner
) -> None:
    client = standalone_env.client
    common = ["--redis", standalone_env.url, "--service-namespace", NS, "--metrics-interval", "0.1"]
    mover = spawn("lpush", "--in", "{g}:in", "--out", "{g}:out", "--metrics-port", "0", *common)
    exporter = spawn("exporter", "--port", "0", "--cache-ttl", "0", *common)
    own, served = metrics_port(mover), metrics_port(exporter)
    client.lpush("{g}:in", "a", "b")
    wait_until(lambda: client.hget(f"{NS}:metrics:move", "sum") == "2")
    names: set[str] = set()
    for port in (own, served):
        got = scrape(port)
        names.update(got.families)  # families exported empty (rcontrol's replicas) count too
        names.update(name for name, _ in got.samples)
    asked = {name for expr in _queries(dashboard) for name in _SERIES.findall(expr)}
    assert asked, "the dashboard asks for nothing"
    assert asked <= names, f"not exported: {sorted(asked - names)}"
