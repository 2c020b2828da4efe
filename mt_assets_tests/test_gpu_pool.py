"""The project-local instance limits the `gpu` pool to one step at a time; other steps run in parallel.

Four stand-in steps (mt_assets_tests/pool_probe.py), two in the pool and two outside it, run on the
multiprocess executor against an instance configured by .dagster_home/dagster.yaml.
"""

import json
import shutil
from pathlib import Path

import dagster as dg
import yaml

from mt_assets.definitions import defs
from mt_assets.defs.common import GPU_POOL
from mt_assets_tests import pool_probe

PROJECT_INSTANCE = Path(__file__).resolve().parent.parent / ".dagster_home" / "dagster.yaml"


def overlap(a: dict, b: dict) -> float:
    return min(a["end"], b["end"]) - max(a["start"], b["start"])


def test_instance_configuration_limits_pools_to_one():
    config = yaml.safe_load(PROJECT_INSTANCE.read_text())
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}


def test_only_model_assets_are_in_the_gpu_pool():
    graph = defs.resolve_asset_graph()
    pooled = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys()}
    assert {name for name, pools in pooled.items() if pools} == {"adapter_B", "adapter_C", "adapter_D", "adapter_E",
                                                                     "translations"}
    assert all(pools == {GPU_POOL} for pools in pooled.values() if pools)
    assert pool_probe.POOL == GPU_POOL


def test_gpu_steps_run_one_at_a_time_while_cpu_steps_run_together(tmp_path):
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir()
    out.mkdir()
    shutil.copy(PROJECT_INSTANCE, home / "dagster.yaml")
    run_config = {"ops": {name: {"config": {"folder": str(out), "seconds": 4.0}} for name in pool_probe.PROBES}}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        with dg.execute_job(dg.reconstructable(pool_probe.probe_job), instance=instance,
                            run_config=run_config) as result:
            assert result.success
            blocked = [e for e in result.all_events if e.is_engine_event and "blocked by limit for pool gpu"
                       in (e.message or "")]
    ran = {name: json.loads((out / f"{name}.json").read_text()) for name in pool_probe.PROBES}
    assert overlap(ran["gpu_1"], ran["gpu_2"]) < 0, ran  # one after the other
    assert overlap(ran["cpu_1"], ran["cpu_2"]) > 0, ran  # side by side
    assert blocked, "the second gpu step never waited for the pool"
