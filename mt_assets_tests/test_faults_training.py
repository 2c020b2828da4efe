"""The fault suite, training lifecycle: concurrent runs, a killed parent, a failed move into the lake,
a Pipes message cut off mid-line, checkpoints on a lake that outlives the machine, reproducible hashes.

Counted in the session's ledger (conftest.py), with test_faults.py's faults.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from pathlib import Path

import pytest

from mt_assets.lib.lora.checkpoints import restore_checkpoints
from mt_assets.lib.hashing import folder_hash, table_hash
from mt_assets.lib.lora.adapter_folder import LINEAGE_FILE, read_adapter_summary
from mt_assets.lib.lora.train_loop import train_adapter
from mt_assets.lib.models import loading
from mt_assets_tests.fault_support import Child, complete_checkpoints, materialize, start_child, wait_for
from mt_assets_tests.test_faults import (  # noqa: F401  (module fixtures: the tiny model, the tables, the reference adapter)
    STEPS,
    EVERY,
    Crash,
    crash_after_checkpoint,
    failure_text,
    metadata,
    model_dir,
    new_lake,
    recipe,
    reference,
    same_weights,
    spec,
    tables,
)


def trainer_processes(marker: str, launchers: bool = False) -> list[int]:
    """Process ids of training processes (lib.lora.launch; with `launchers`, also the `accelerate
    launch` processes that started them) whose command line mentions `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "mt_assets.lib.lora.launch" in command and marker in command and (launchers or "accelerate" not in command):
            found.append(int(entry.name))
    return found


def finish(child: Child, timeout_s: float = 600) -> None:
    try:
        child.process.wait(timeout=timeout_s)
    except Exception:
        child.kill()
        raise
    assert child.process.returncode == 0, child.output()


@pytest.mark.slow
def test_two_lakes_training_at_once_each_train_on_their_own_table(ledger, model_dir, tables, tmp_path):
    with ledger.fault("training: two profiles that differ only in data_lake train adapter_B at once") as fault:
        lakes = [new_lake(tmp_path, tables, "lake1"), new_lake(tmp_path, tables, "lake2")]
        smaller = tables["train_A"].head(24)  # the second lake's train_A: another table, fewer pairs
        smaller.to_parquet(lakes[1] / "train_A.parquet", index=False)
        own = [tables["train_A"], smaller]
        children = []
        for lake in lakes:
            (lake / "run").mkdir()
            children.append(start_child(spec(lake, model_dir), ["adapter_B"], lake / "run"))
        for child in children:
            finish(child)
        for lake, table in zip(lakes, own):
            summary = read_adapter_summary(lake / "adapter_B")
            lineage = json.loads((lake / "adapter_B" / LINEAGE_FILE).read_text())
            fault.kept(summary["train_pairs"] == len(table) and summary["training_table_hash"] == table_hash(table),
                       f"{lake.name}'s adapter_B trained on {summary['train_pairs']} pairs of another table")
            assert lineage["training_table_hash"] == table_hash(table) == summary["training_table_hash"]
            assert summary["steps"] == STEPS
            assert list((lake / ".staging").iterdir()) == [], "the work folder is removed once the adapter is in"
        assert folder_hash(lakes[0] / "adapter_B") != folder_hash(lakes[1] / "adapter_B")


@pytest.mark.slow
def test_two_runs_of_the_same_work_take_turns(ledger, model_dir, tables, tmp_path):
    with ledger.fault("training: two runs of the same adapter on one lake at once") as fault:
        lake = new_lake(tmp_path, tables)
        staging = lake / ".staging"
        (tmp_path / "first").mkdir()
        (tmp_path / "second").mkdir()
        first = start_child(spec(lake, model_dir), ["adapter_B"], tmp_path / "first")
        wait_for(lambda: bool(trainer_processes(str(staging))), first, 300, "the first run's trainer")
        second = start_child(spec(lake, model_dir), ["adapter_B"], tmp_path / "second")
        finish(first)
        finish(second)
        assert "waiting for the staging folder" in second.log.read_text(), second.output()
        summary = read_adapter_summary(lake / "adapter_B")
        fault.kept(summary["steps"] == STEPS and summary["train_pairs"] == len(tables["train_A"]),
                   f"the adapter in the lake is incomplete: {summary}")
        assert list(staging.iterdir()) == []


@pytest.mark.slow
def test_killing_only_the_parent_leaves_no_trainer_behind(ledger, model_dir, tables, tmp_path):
    with ledger.fault("training: the run's own process is killed, not its process group") as fault:
        lake = new_lake(tmp_path, tables)
        long_run = spec(lake, model_dir, training={"max_steps": 60})  # longer than the wait below
        child = start_child(long_run, ["adapter_B"], tmp_path)
        marker = str(lake / ".staging")
        wait_for(lambda: bool(trainer_processes(marker)), child, 300, "a training process")
        trainers = trainer_processes(marker)
        os.kill(child.process.pid, signal.SIGKILL)  # only the parent: its children are not signalled
        child.process.wait(timeout=60)
        deadline = time.monotonic() + 120  # a bound on waiting, not a timing assertion
        while trainer_processes(marker, launchers=True) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = trainer_processes(marker, launchers=True)
        try:
            os.killpg(child.process.pid, signal.SIGKILL)  # do not leave them running past the test
        except ProcessLookupError:
            pass
        fault.kept(left == [], f"processes {left} (trainer {trainers}) kept running after their run was killed")
        written = list((lake / ".staging").glob("*/adapter-*/training_summary.json"))
        fault.kept(written == [], f"an orphaned trainer finished and wrote {written}")


@pytest.mark.slow
def test_a_failed_move_into_the_lake_keeps_the_checkpoints_for_the_rerun(
        ledger, model_dir, tables, reference, tmp_path, instance, monkeypatch):
    with ledger.fault("training: the finished adapter cannot be moved into the lake") as fault:
        lake = new_lake(tmp_path, tables)
        real_rename = os.rename

        def fail_into_place(src, dst, *args, **kwargs):
            if Path(dst) == lake / "adapter_B":
                raise OSError(errno.EIO, "Input/output error")
            return real_rename(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "rename", fail_into_place)
        result = materialize(spec(lake, model_dir), ["adapter_B"], instance, raise_on_error=False)
        monkeypatch.undo()
        assert not result.success and "Input/output error" in failure_text(result)
        assert not (lake / "adapter_B").exists()
        saved = complete_checkpoints(lake / ".staging")
        fault.kept(bool(saved) and saved[-1].name == f"checkpoint-{STEPS}",
                   f"the checkpoints of the finished training were removed: {saved}")

        result = materialize(spec(lake, model_dir), ["adapter_B"], instance)
        summary = read_adapter_summary(lake / "adapter_B")
        fault.kept(metadata(result, "adapter_B")["resumed_from"] == f"checkpoint-{STEPS}",
                   f"the rerun trained again from step 1: {metadata(result, 'adapter_B')['resumed_from']!r}")
        assert summary["steps"] == STEPS
        fault.kept(same_weights(lake / "adapter_B", reference), "the adapter differs from an uninterrupted run")
        assert list((lake / ".staging").iterdir()) == [], "checkpoints are removed once the adapter is in the lake"


SLOW_PIPES_WRITER = '''
import json
import time

import dagster_pipes


def _write_in_two_parts(self, message):
    line = json.dumps(message) + "\\n"
    with open(self._path, "a", encoding="utf-8") as handle:
        handle.write(line[: len(line) // 2])
        handle.flush()
        if len(line) > 200:
            time.sleep(0.5)  # a large message reaches the file in two writes, as on a slow disk
        handle.write(line[len(line) // 2:])


dagster_pipes.PipesFileMessageWriterChannel.write_message = _write_in_two_parts
'''


@pytest.mark.slow
def test_a_large_report_read_half_written_loses_no_metadata(ledger, model_dir, tables, tmp_path, instance, monkeypatch):
    with ledger.fault("training: the Pipes reader reads a large message half-written") as fault:
        lake = new_lake(tmp_path, tables)
        hook = tmp_path / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(SLOW_PIPES_WRITER)  # loaded by the training process at start
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
        result = materialize(spec(lake, model_dir), ["adapter_B"], instance)
        recorded = metadata(result, "adapter_B")
        summary = read_adapter_summary(lake / "adapter_B")
        for key in ("trainable_parameters", "steps", "first_train_loss", "final_train_loss", "wall_seconds",
                    "training_table_hash", "device", "world_size", "training_log"):
            fault.kept(key in recorded, f"adapter_B lacks metadata {key}")
        assert recorded["trainable_parameters"] == summary["trainable_parameters"] > 0
        assert recorded["steps"] == summary["steps"] == STEPS
        assert recorded["training_log"].count("\n") >= STEPS + 1  # header, rule, a row per logged step


@pytest.mark.slow
def test_checkpoints_mirrored_to_the_lake_resume_on_another_machine(ledger, model_dir, tables, reference, tmp_path,
                                                                     monkeypatch):
    with ledger.fault("training: the machine's disk is lost after a checkpoint (a pod restarted)") as fault:
        mirror = f"memory://lake-{tmp_path.name}/.staging/adapter_B/checkpoints"  # fsspec's object store in memory
        tokenizer = loading.load_tokenizer(str(model_dir))
        first, second = tmp_path / "pod1", tmp_path / "pod2"
        with pytest.raises(Crash), crash_after_checkpoint(monkeypatch, 2 * EVERY):
            train_adapter(loading.load_causal_lm(str(model_dir), dtype="fp32"), tokenizer, tables["train_A"], recipe(model_dir),
                          first / "adapter", checkpoint_dir=first / "checkpoints", checkpoint_mirror=mirror)
        assert list(first.glob(f"checkpoints/*/checkpoint-{2 * EVERY}/trainer_state.json"))  # died before copying it
        restored = restore_checkpoints(mirror, second / "checkpoints")  # a fresh disk: only the lake has them
        assert [name.split("/")[1] for name in restored] == [f"checkpoint-{EVERY}"]
        result = train_adapter(loading.load_causal_lm(str(model_dir), dtype="fp32"), tokenizer, tables["train_A"], recipe(model_dir),
                               second / "adapter", checkpoint_dir=second / "checkpoints", checkpoint_mirror=mirror)
        fault.kept(result.summary["resumed_from"] == f"checkpoint-{EVERY}",
                   f"the restarted run did not resume from the lake's checkpoint: {result.summary['resumed_from']}")
        assert result.summary["steps"] == STEPS
        fault.kept(same_weights(second / "adapter", reference), "the resumed adapter differs from an uninterrupted run")


@pytest.mark.slow
def test_a_retrained_identical_adapter_hashes_the_same(model_dir, tables, tmp_path):
    tokenizer = loading.load_tokenizer(str(model_dir))
    folders = [tmp_path / "first" / "adapter", tmp_path / "second" / "adapter"]
    for folder in folders:  # as the adapter assets train: checkpoints in a work folder beside the adapter
        train_adapter(loading.load_causal_lm(str(model_dir), dtype="fp32"), tokenizer, tables["train_A"], recipe(model_dir), folder,
                      checkpoint_dir=folder.parent / "work")
    summary = json.loads((folders[0] / "training_summary.json").read_text())
    assert "wall_seconds" not in summary and str(tmp_path) not in json.dumps(summary)
    assert folder_hash(folders[0]) == folder_hash(folders[1])
    assert summary["training_table_hash"] == table_hash(tables["train_A"])
