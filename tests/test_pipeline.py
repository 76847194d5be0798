"""One config file for a pipeline of stages: each service reads the shared keys and its own table.

The end-to-end test runs the very file shown in docs/pipeline.md (mdedupe → mthrottle → mbalance
→ workers) on standalone and Cluster.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mpush.config import (
    MbalanceSettings,
    MdedupeSettings,
    MpushSettings,
    MthrottleSettings,
    load_settings,
)
from mpush.errors import ConfigError
from tests.conftest import RedisEnv
from tests.helpers import Spawner, run_cli, wait_until
from tests.stagetools import assert_each_once, messages, push, received

DOC = Path(__file__).resolve().parent.parent / "docs" / "pipeline.md"


def pipeline_toml() -> str:
    found = re.search(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert found, "docs/pipeline.md shows the pipeline's config file"
    return found.group(1)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_each_stage_reads_the_shared_keys_and_its_own_table(tmp_path: Path) -> None:
    path = write(tmp_path, pipeline_toml())
    dedupe = load_settings(MdedupeSettings, {"config": path}, env={})
    throttle = load_settings(MthrottleSettings, {"config": path}, env={})
    balance = load_settings(MbalanceSettings, {"config": path}, env={})
    assert dedupe.service_namespace == throttle.service_namespace == balance.service_namespace
    assert (dedupe.out, throttle.input) == ([throttle.input], dedupe.out[0])
    assert (throttle.out, balance.input) == ([balance.input], throttle.out[0])
    assert (dedupe.window, throttle.rate, throttle.burst) == (60, 100, 10)
    assert [out.cap for out in balance.outputs()] == [100, 100]


def test_flags_override_the_table_and_other_tables_are_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'pop_timeout = 2.0\n[mthrottle]\nin = "a"\nout = "b"\nrate = 5\npop_timeout = 0.5\n'
        '[mpush]\nin = "x"\nout = ["y", "z"]\n',
    )
    throttle = load_settings(MthrottleSettings, {"config": path, "rate": 7}, env={})
    assert (throttle.rate, throttle.pop_timeout, throttle.out) == (7, 0.5, ["b"])
    fanout = load_settings(MpushSettings, {"config": path}, env={})
    assert (fanout.input, fanout.out, fanout.pop_timeout) == ("x", ["y", "z"], 2.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[mdedupe]\nin = "a"\nout = "b"\nwindow = 1\nrate = 5\n', "config: rate: unknown setting"),
        ('mdedupe = "x"\n', "config: mdedupe: must be a table"),
        ('[mbalance]\nin = "a"\nout = ["b", "c"]\nweight = {d = 2}\n', "'d' is not one of"),
    ],
)
def test_bad_tables_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    cls = MbalanceSettings if "mbalance" in text else MdedupeSettings
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(cls, {"config": path}, env={})


def test_a_stage_only_key_at_the_top_level_is_refused_by_the_other_stages(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, 'window = 1\n[mdedupe]\nin = "a"\nout = "b"\n')
    assert load_settings(MdedupeSettings, {"config": path}, env={}).window == 1
    flags = {"config": path, "input": "a", "out": ["b"], "rate": 1}
    with pytest.raises(ConfigError, match="config: window: unknown setting"):
        load_settings(MthrottleSettings, flags, env={})


def test_bad_flags_exit_2_with_one_line(tmp_path: Path) -> None:
    result = run_cli("mbalance", "--in", "a", "--out", "b", "--cap", "b=-1")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "mpush mbalance: config: cap: 'b=-1': cap must be a whole number >= 0"
    )


def test_the_documented_pipeline_runs_end_to_end(
    redis_env: RedisEnv, spawn: Spawner, tmp_path: Path
) -> None:
    env = redis_env
    path = write(tmp_path, pipeline_toml())
    settings = load_settings(MbalanceSettings, {"config": path}, env={})
    namespace = settings.service_namespace
    assert namespace
    procs = []
    for stage in ("mdedupe", "mthrottle", "mbalance"):
        procs.append(spawn(stage, "--config", str(path), "--redis", env.url))
    for stage, proc in zip(("mdedupe", "mthrottle", "mbalance"), procs, strict=True):
        proc.wait_for_log(f"{stage} started")

    requests = load_settings(MdedupeSettings, {"config": path}, env={}).input
    repeats = load_settings(MdedupeSettings, {"config": path}, env={}).duplicates
    unique = messages(60, prefix="job")
    sent = unique[:40] + unique[:20] + unique[40:]  # 20 repeats in the middle
    push(env, requests, sent)
    work = [out.queue for out in settings.outputs()]
    done: list[str] = []

    def worker_round() -> bool:
        for queue in work:
            msg = env.client.rpop(queue)
            if msg is not None:
                done.append(msg)
        return len(done) >= len(unique)

    wait_until(worker_round, timeout=20, message=lambda: f"workers got {len(done)} of 60")
    assert_each_once(done, unique)
    assert received(env, repeats) == unique[:20]

    status = run_cli("status", "--redis", env.url, "--service-namespace", namespace, "--json")
    report = json.loads(status.stdout)
    assert sorted(i["service"] for i in report["instances"]) == ["mbalance", "mdedupe", "mthrottle"]
    assert {requests, repeats, *work} <= set(report["queues"])
