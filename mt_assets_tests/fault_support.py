"""Building blocks of the fault suite (test_faults.py): the ledger that counts faults, lost data and
leaked secrets, resources for runs on the demo corpus, and a child-process entry point that a test
can kill part-way.

    python -m mt_assets_tests.fault_support materialize SPEC.json   # a run to SIGKILL
    python -m mt_assets_tests.fault_support sample-rss CORPUS.tsv    # peak memory of sampling a file
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from mt_assets.defs.data import data_assets
from mt_assets.defs.fusion import fusion_assets
from mt_assets.defs.synthetic import OpenAICompatibleTeacher, Synthesis, synthetic_assets
from mt_assets.defs.training import training_assets
from mt_assets_tests.e2e_support import DEMO_COLUMNS, DEMO_TSV, graph_resources, tiny_base

REPO_ROOT = Path(__file__).resolve().parent.parent
PRETRAIN_STEPS = 5
"""The fault suite's tiny base model barely pretrains: resuming and failing need no fluent model."""
SAMPLE_SIZE = 50
SPLIT = ["opus_sample", "train_A", "test_A"]
ASSETS = [*data_assets, *synthetic_assets, *training_assets, *fusion_assets]
TRAINING = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["all-linear"], "modules_to_save": ["wte"],
            "learning_rate": 3e-3, "batch_size": 4, "max_length": 96, "max_steps": 6, "eval_steps": 2,
            "logging_steps": 1, "validation_fraction": 0.0}
"""6 steps, a checkpoint every 2: enough to kill a run between checkpoints."""


# --- the ledger ----------------------------------------------------------------------------------

@dataclass
class FaultRecord:
    """One fault tried: survived when its test passed; lost data and leaked secrets as counted."""

    name: str
    survived: bool = False
    data_lost: int = 0
    secrets_leaked: int = 0
    notes: list[str] = field(default_factory=list)

    def kept(self, ok: bool, what: str) -> None:
        """Assert that data survived the fault; a failure counts as data lost."""
        if not ok:
            self.data_lost += 1
            raise AssertionError(f"{self.name}: data lost: {what}")

    @staticmethod
    def hits(secret: str, content: str | bytes) -> int:
        """Occurrences of `secret` in `content`, else of its second half (a cut-off leak)."""
        data = content if isinstance(content, bytes) else content.encode("utf-8", "replace")
        return data.count(secret.encode()) or data.count(secret[len(secret) // 2:].encode())

    def no_secret(self, secret: str, places: dict[str, str | bytes]) -> None:
        """Search every place for `secret`; all hits count as leaked secrets, then fail naming them."""
        found = {where: hits for where, content in places.items() if (hits := self.hits(secret, content))}
        self.secrets_leaked += sum(found.values())
        if found:
            raise AssertionError(f"{self.name}: the secret appears in {found}")


class Ledger:
    """The faults a test module tried, for its summary line."""

    def __init__(self) -> None:
        self.faults: list[FaultRecord] = []

    @contextmanager
    def fault(self, name: str) -> Iterator[FaultRecord]:
        record = FaultRecord(name)
        self.faults.append(record)
        yield record
        record.survived = True

    def summary(self) -> str:
        return (f"faults tried: {len(self.faults)}, survived: {sum(f.survived for f in self.faults)}, "
                f"data lost: {sum(f.data_lost for f in self.faults)}, "
                f"secrets leaked: {sum(f.secrets_leaked for f in self.faults)}")


# --- resources and runs --------------------------------------------------------------------------

def run_resources(spec: dict) -> dict:
    """Resources for a run on the demo corpus, the fault suite's tiny model and a data lake.

    `spec`: lake, model_dir, and optionally sample_size, training (recipe overrides), teacher
    (OpenAICompatibleTeacher settings; default: the oracle), synthesis (Synthesis settings).
    """
    lake = Path(spec["lake"])
    resources = graph_resources(lake, tiny_base(Path(spec["model_dir"]), PRETRAIN_STEPS),
                                sample_size=spec.get("sample_size", SAMPLE_SIZE),
                                training={**TRAINING, **spec.get("training", {})})
    if spec.get("teacher"):
        resources["teacher"] = OpenAICompatibleTeacher(**spec["teacher"])
    if spec.get("synthesis") is not None:
        resources["synthesis"] = Synthesis(**{"cache_dir": str(lake / ".teacher_cache"), **spec["synthesis"]})
    return resources


def materialize(spec: dict, selection: list[str], instance: dg.DagsterInstance | None = None,
                raise_on_error: bool = True, **overrides) -> dg.ExecuteInProcessResult:
    resources = {**run_resources(spec), **overrides}
    return dg.materialize(ASSETS, resources=resources, selection=selection, instance=instance,
                          raise_on_error=raise_on_error)


@dataclass
class Child:
    """A run in a process of its own (own session, so a kill reaches only it)."""

    process: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> int:
        os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=60)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_child(spec: dict, selection: list[str], folder: Path) -> Child:
    spec_file = folder / "spec.json"
    spec_file.write_text(json.dumps({**spec, "selection": selection}))
    log = folder / "child.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "mt_assets_tests.fault_support", "materialize", str(spec_file)],
                                   cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return Child(process, log)


def wait_for(condition: Callable[[], bool], child: Child, timeout_s: float, what: str,
             watch: Callable[[], None] | None = None) -> None:
    """Poll `condition` (and `watch`, e.g. an invariant) until true; fail if the child ends first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if watch:
            watch()
        if not child.alive():
            raise AssertionError(f"the child run ended (code {child.process.returncode}) before {what}:\n"
                                 f"{child.output()}")
        if time.monotonic() > deadline:
            child.kill()
            raise AssertionError(f"no {what} within {timeout_s} s:\n{child.output()}")
        time.sleep(0.05)
    if watch:
        watch()


def complete_checkpoints(staging: Path, asset: str = "adapter_B") -> list[Path]:
    """Checkpoint folders in an adapter's work folders under a staging folder (lib.lora.staging) whose
    trainer_state.json is whole."""
    found = []
    for state in staging.glob(f"{asset}-*/checkpoints/*/checkpoint-*/trainer_state.json"):
        try:
            json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        found.append(state.parent)
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def visible(lake: Path) -> set[str]:
    """What a downstream asset could read in the lake: names not hidden by a leading dot."""
    return {p.name for p in lake.iterdir() if not p.name.startswith(".")}


# --- child-process commands ----------------------------------------------------------------------

def _materialize_command(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    materialize(spec, spec["selection"], instance=dg.DagsterInstance.ephemeral())


def _sample_rss_command(path: str) -> None:
    """Print, as JSON, peak resident memory before and after sampling 200 pairs of a TSV corpus."""
    from mt_assets.lib.data.corpus import read_local
    from mt_assets.lib.data.sampling import sample_pairs

    def run(corpus: Path, **columns):
        return sample_pairs(read_local("tsv", corpus, "de", "fr", **columns), 200, 1, "de", "fr", corpus.name)

    run(DEMO_TSV, **DEMO_COLUMNS)  # warm up: imports, regex and codec caches
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    table, report = run(Path(path))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"maxrss_before_kib": before, "maxrss_after_kib": after, "seconds": time.perf_counter() - started,
                      "rows": len(table), "report": report}))


if __name__ == "__main__":
    commands = {"materialize": _materialize_command, "sample-rss": _sample_rss_command}
    commands[sys.argv[1]](*sys.argv[2:])
