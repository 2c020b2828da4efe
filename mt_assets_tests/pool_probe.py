"""Stand-ins for the pool test: two steps in the `gpu` pool and two outside it, each recording when
it ran. Kept free of torch so that each step process starts quickly."""

import json
import time
from pathlib import Path

import dagster as dg

POOL = "gpu"
"""defs.common.GPU_POOL (the test checks that they agree)."""


class Probe(dg.Config):
    folder: str
    seconds: float = 3.0


def _probe(name: str, pool: str | None) -> dg.AssetsDefinition:
    @dg.asset(name=name, pool=pool)
    def _asset(config: Probe) -> None:
        start = time.time()
        time.sleep(config.seconds)
        Path(config.folder, f"{name}.json").write_text(json.dumps({"start": start, "end": time.time()}))

    return _asset


PROBES = {"gpu_1": POOL, "gpu_2": POOL, "cpu_1": None, "cpu_2": None}


def probe_job() -> dg.JobDefinition:
    """All four probes in one run, on the multiprocess executor (as `dagster dev` runs them)."""
    assets = [_probe(name, pool) for name, pool in PROBES.items()]
    job = dg.define_asset_job("probe_job", executor_def=dg.multiprocess_executor.configured({"max_concurrent": 4}))
    return dg.Definitions(assets=assets, jobs=[job]).resolve_job_def("probe_job")
