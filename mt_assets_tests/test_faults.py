"""The fault suite: interrupted runs, bad input, bad configuration, teacher faults and secrets.

Each test tries one fault and records in the module's ledger whether the pipeline survived it,
whether any data was lost and whether the canary API key leaked anywhere. After the last test the
module writes its summary line to the terminal (repeated at the end of the pytest run):

    faults tried: N, survived: N, data lost: 0, secrets leaked: 0

Runs that must really die run in a child process (fault_support) that is SIGKILLed part-way.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from mt_assets.defs.io_manager import DataLakeIOManager, Folder
from mt_assets.defs.models import HubBaseModel, TinyBaseModel
from mt_assets.defs.data import Experiment, LocalCorpus
from mt_assets.defs.synthetic import OracleTeacherCorpus
from mt_assets.lib.models import loading
from mt_assets.lib.hashing import folder_hash
from mt_assets.lib.data.text import normalize_text
from mt_assets.lib.synth.generation import generate_synthetic
from mt_assets.lib.lora.adapter_folder import read_adapter_log, read_adapter_summary
from mt_assets.lib.lora.train_loop import train_adapter
from mt_assets_tests.e2e_support import DEMO_COLUMNS, DEMO_TSV, tiny_base
from mt_assets_tests.fault_support import (
    PRETRAIN_STEPS,
    REPO_ROOT,
    SPLIT,
    TRAINING,
    FaultRecord,
    complete_checkpoints,
    materialize,
    run_resources,
    start_child,
    visible,
    wait_for,
)
from mt_assets_tests.loopback_teacher import INJECTION_PAIR, Fault, LoopbackTeacher

CANARY = "sk-canary-3f9d6c1e8b2a4705d9e1"
"""The API key of every run here: it must never show up anywhere but in the request header."""
KEY_ENV = "MT_TEACHER_API_KEY"
"""The teacher resource's default api_key_env."""
SYNTH = {"size": 20, "pairs_per_request": 5}
STEPS, EVERY = TRAINING["max_steps"], TRAINING["eval_steps"]
"""Steps of every training run here, and steps between its checkpoints."""


# --- fixtures and helpers --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fault-model") / "tiny"
    tiny_base(folder, PRETRAIN_STEPS).model_path()
    return folder


@pytest.fixture(scope="module")
def tables(tmp_path_factory, model_dir) -> dict:
    """opus_sample, train_A and test_A, materialized once into a template lake."""
    lake = tmp_path_factory.mktemp("fault-tables") / "lake"
    with dg.instance_for_test() as instance:
        materialize(spec(lake, model_dir), SPLIT, instance)
    return {"lake": lake, **{name: pd.read_parquet(lake / f"{name}.parquet") for name in SPLIT}}


def spec(lake: Path, model_dir: Path, **settings) -> dict:
    return {"lake": str(lake), "model_dir": str(model_dir), **settings}


def new_lake(tmp_path: Path, tables: dict, name: str = "lake") -> Path:
    """A data lake holding the template's opus_sample, train_A and test_A."""
    lake = tmp_path / name
    lake.mkdir()
    for table in SPLIT:
        shutil.copy(tables["lake"] / f"{table}.parquet", lake)
    return lake


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(event.step_failure_data.error.to_string() for event in result.get_step_failure_events())


def hidden_debris(lake: Path, name: str) -> list[str]:
    return [p.name for p in lake.iterdir() if p.name.startswith(f".{name}.")]


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


# --- training ------------------------------------------------------------------------------------

class Crash(Exception):
    """Stands for a process dying right after a checkpoint was written."""


@contextmanager
def crash_after_checkpoint(monkeypatch, step: int):
    from trl import SFTTrainer

    original = SFTTrainer._save_checkpoint

    def save_then_crash(self, model, trial):
        original(self, model, trial)
        if self.state.global_step == step:
            raise Crash(f"died after writing checkpoint-{step}")

    monkeypatch.setattr(SFTTrainer, "_save_checkpoint", save_then_crash)
    try:
        yield
    finally:
        monkeypatch.setattr(SFTTrainer, "_save_checkpoint", original)


def recipe(model_dir: Path):
    """Exactly the recipe the adapter assets of these runs use."""
    return run_resources(spec(Path("unused"), model_dir))["training"].recipe()


def train(model_dir: Path, table: pd.DataFrame, out: Path):
    tokenizer = loading.load_tokenizer(str(model_dir))
    model = loading.load_causal_lm(str(model_dir), dtype="fp32")
    return train_adapter(model, tokenizer, table, recipe(model_dir), out)


def same_weights(folder: Path, reference: dict[str, torch.Tensor]) -> bool:
    weights = load_file(folder / "adapter_model.safetensors")
    return weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in weights)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model_dir, tables) -> dict[str, torch.Tensor]:
    """The adapter an uninterrupted run trains on train_A: every resumed run must end equal to it."""
    out = tmp_path_factory.mktemp("reference") / "adapter"
    result = train(model_dir, tables["train_A"], out)
    assert result.summary["resumed_from"] is None and result.summary["steps"] == STEPS
    weights = load_file(out / "adapter_model.safetensors")
    assert any("modules_to_save" in key or ".wte." in key for key in weights), "the recipe trains wte as a whole"
    return weights


@pytest.mark.slow
def test_training_killed_after_a_checkpoint_resumes_to_the_same_complete_adapter(
        ledger, model_dir, tables, reference, tmp_path, instance):
    with ledger.fault("training: SIGKILL after the first checkpoint, then materialize again") as fault:
        lake = new_lake(tmp_path, tables)
        run = spec(lake, model_dir)
        staging = lake / ".staging"
        tables_only = visible(lake)

        def nothing_half_written():
            assert visible(lake) == tables_only, f"visible in the lake mid-run: {visible(lake) - tables_only}"

        child = start_child(run, ["adapter_B"], tmp_path)
        wait_for(lambda: bool(complete_checkpoints(staging)), child, 300, "a complete checkpoint",
                 watch=nothing_half_written)
        assert child.kill() == -signal.SIGKILL, "the run was still training when it was killed"
        saved = complete_checkpoints(staging)[-1].name
        assert int(saved.split("-")[1]) < STEPS
        nothing_half_written()
        with pytest.raises(FileNotFoundError, match="adapter_B has not been materialized"):
            DataLakeIOManager(base_path=str(lake)).load_input(dg.build_input_context(asset_key=dg.AssetKey("adapter_B")))

        result = materialize(run, ["adapter_B"], instance)
        adapter = lake / "adapter_B"
        summary = read_adapter_summary(adapter)
        resumed = metadata(result, "adapter_B")["resumed_from"]  # a run's fact: in its metadata, not in the folder
        fault.kept(resumed == saved, f"the rerun did not resume from {saved}: {resumed}")
        assert summary["steps"] == STEPS
        logged = read_adapter_log(adapter).dropna(subset=["train_loss"])["step"].tolist()
        fault.kept(logged == list(range(1, STEPS + 1)), f"the log before the kill was lost: steps {logged}")
        fault.kept(same_weights(adapter, reference),
                   "LoRA weights or modules_to_save differ from an uninterrupted run")

        from peft import PeftModel, get_peft_model_state_dict

        loaded = PeftModel.from_pretrained(loading.load_causal_lm(str(model_dir), dtype="fp32"), str(adapter))
        in_model = get_peft_model_state_dict(loaded)
        assert in_model.keys() == reference.keys(), "PEFT loads every LoRA matrix and the saved wte"
        assert all(torch.equal(in_model[k], reference[k]) for k in reference)
        tokenizer = loading.load_tokenizer(str(model_dir))
        with torch.no_grad():
            logits = loaded(**tokenizer(["Translate German to French.\nGerman: Hallo.\nFrench:"],
                                        return_tensors="pt")).logits
        assert torch.isfinite(logits).all()
        assert not (adapter / "checkpoints").exists() and list(staging.iterdir()) == []
        assert hidden_debris(lake, "adapter_B") == []


@pytest.mark.slow
def test_a_checkpoint_cut_off_mid_write_is_passed_over(ledger, model_dir, tables, reference, tmp_path, monkeypatch):
    with ledger.fault("training: killed while writing a checkpoint (trainer_state.json cut off)") as fault:
        out = tmp_path / "adapter"
        with pytest.raises(Crash), crash_after_checkpoint(monkeypatch, 2 * EVERY):
            train(model_dir, tables["train_A"], out)
        (state,) = out.glob(f"checkpoints/**/checkpoint-{2 * EVERY}/trainer_state.json")
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])

        result = train(model_dir, tables["train_A"], out)
        fault.kept(result.summary["resumed_from"] == f"checkpoint-{EVERY}",
                   f"resumed from {result.summary['resumed_from']}, not the last whole checkpoint")
        assert result.summary["steps"] == STEPS
        fault.kept(same_weights(out, reference), "the resumed adapter differs from an uninterrupted run")


@pytest.mark.slow
def test_checkpoints_of_another_table_are_never_resumed(ledger, model_dir, tables, reference, tmp_path, monkeypatch):
    with ledger.fault("training: the staging folder holds checkpoints of another table") as fault:
        out = tmp_path / "adapter"
        other_table = tables["train_A"].iloc[::-1].reset_index(drop=True)
        with pytest.raises(Crash), crash_after_checkpoint(monkeypatch, EVERY):
            train(model_dir, other_table, out)
        (stale,) = out.glob(f"checkpoints/**/checkpoint-{EVERY}")

        result = train(model_dir, tables["train_A"], out)
        assert result.summary["resumed_from"] is None, f"resumed {stale}, a checkpoint of another table"
        assert not stale.exists(), "checkpoints of another run are removed"
        fault.kept(same_weights(out, reference), "the adapter mixes in training on another table")


# --- the data lake -----------------------------------------------------------------------------------

def table_asset(frame: pd.DataFrame):
    @dg.asset
    def produced() -> pd.DataFrame:
        return frame

    return produced


def folder_asset(built: Path):
    @dg.asset
    def artifact() -> Folder:
        return Folder(built)

    return artifact


def build_folder(built: Path, version: str) -> None:
    built.mkdir()
    for index in range(3):
        (built / f"part-{index}.bin").write_text(f"{version}-{index}" * 1000)


def test_a_table_write_cut_off_leaves_the_previous_table_and_no_debris(ledger, tmp_path, instance, monkeypatch):
    with ledger.fault("data lake: a table write cut off (disk full)") as fault:
        lake, old = tmp_path / "lake", pd.DataFrame({"a": [1, 2, 3]})
        resources = {"io_manager": DataLakeIOManager(base_path=str(lake))}
        assert dg.materialize([table_asset(old)], resources=resources, instance=instance).success

        def half_then_full(self, handle, index=False):
            handle.write(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_full)
        result = dg.materialize([table_asset(pd.DataFrame({"a": [9]}))], resources=resources, instance=instance,
                                raise_on_error=False)
        monkeypatch.undo()
        assert not result.success and "No space left" in failure_text(result)
        fault.kept(pd.read_parquet(lake / "produced.parquet").equals(old), "the previous table")
        assert hidden_debris(lake, "produced") == []


def test_an_adapter_copy_cut_off_keeps_both_versions(ledger, tmp_path, instance, monkeypatch):
    with ledger.fault("data lake: an adapter copy to another file system cut off") as fault:
        lake, built = tmp_path / "lake", tmp_path / "built"
        resources = {"io_manager": DataLakeIOManager(base_path=str(lake))}
        build_folder(built, "v1")
        assert dg.materialize([folder_asset(built)], resources=resources, instance=instance).success
        before = folder_hash(lake / "artifact")
        build_folder(built, "v2")
        new = folder_hash(built)
        real_rename = os.rename

        def cross_device(src, dst, *args, **kwargs):
            if Path(src) == built:
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            return real_rename(src, dst, *args, **kwargs)

        def copy_one_file_then_fail(src, dst, **kwargs):
            Path(dst).mkdir(parents=True)
            shutil.copy(Path(src) / "part-0.bin", dst)
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "rename", cross_device)
        monkeypatch.setattr(shutil, "copytree", copy_one_file_then_fail)
        result = dg.materialize([folder_asset(built)], resources=resources, instance=instance, raise_on_error=False)
        monkeypatch.undo()
        assert not result.success and "No space left" in failure_text(result)
        fault.kept(folder_hash(lake / "artifact") == before, "the previous adapter in the lake")
        fault.kept(built.is_dir() and folder_hash(built) == new, "the new adapter, which is still at its source")
        assert hidden_debris(lake, "artifact") == []


def test_an_adapter_swap_that_fails_keeps_both_versions(ledger, tmp_path, instance, monkeypatch):
    with ledger.fault("data lake: the final rename of an adapter fails") as fault:
        lake, built = tmp_path / "lake", tmp_path / "built"
        resources = {"io_manager": DataLakeIOManager(base_path=str(lake))}
        build_folder(built, "v1")
        assert dg.materialize([folder_asset(built)], resources=resources, instance=instance).success
        before = folder_hash(lake / "artifact")
        build_folder(built, "v2")
        new = folder_hash(built)
        real_rename = os.rename

        def fail_into_place(src, dst, *args, **kwargs):
            if Path(dst) == lake / "artifact" and str(src).endswith(".tmp"):
                raise OSError(errno.EIO, "Input/output error")
            return real_rename(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "rename", fail_into_place)
        result = dg.materialize([folder_asset(built)], resources=resources, instance=instance, raise_on_error=False)
        monkeypatch.undo()
        assert not result.success and "Input/output error" in failure_text(result)
        fault.kept(folder_hash(lake / "artifact") == before, "the previous adapter in the lake")
        fault.kept(built.is_dir() and folder_hash(built) == new, "the new adapter, handed back to its source")
        assert hidden_debris(lake, "artifact") == []


# --- synthetic data ------------------------------------------------------------------------------------

def teacher_pool(tables: dict) -> list[tuple[str, str]]:
    """Demo corpus pairs outside opus_sample: what the loopback teacher writes."""
    demo = pd.read_csv(DEMO_TSV, sep="\t")
    taken = {normalize_text(s).casefold() for s in tables["opus_sample"]["source"]}
    return [(s, t) for s, t in zip(demo["de"], demo["fr"]) if normalize_text(s).casefold() not in taken]


def loopback(tables: dict, pool: list[tuple[str, str]] | None = None, **kwargs) -> LoopbackTeacher:
    pairs = lambda frame: list(zip(frame["source"], frame["target"]))  # noqa: E731
    return LoopbackTeacher(teacher_pool(tables) if pool is None else pool, pairs_per_reply=5,
                           test_pairs=pairs(tables["test_A"]), train_pairs=pairs(tables["train_A"]), **kwargs)


def teacher(server_url: str, **overrides) -> dict:
    return {"base_url": server_url, "model": "loopback/teacher", "api_key_env": None, "max_concurrency": 2,
            "timeout_s": 5.0, "max_attempts": 4, "backoff_base_s": 0.01, "backoff_max_s": 0.05, **overrides}


def cached_seeds(cache: Path) -> set[int]:
    seeds = set()
    for path in cache.glob("*/*.json"):
        if not path.name.startswith(".tmp-"):
            seeds.add(json.loads(path.read_text(encoding="utf-8"))["seed"])
    return seeds


def uninterrupted(run: dict, tables: dict, cache: Path) -> pd.DataFrame:
    """synth_B as one uninterrupted run with an empty cache makes it (through lib.synth.generation)."""
    resources = run_resources(run)
    backend = resources["teacher"].build(resources["experiment"], tables["train_A"], tables["test_A"])
    table, _ = generate_synthetic(backend, tables["train_A"], tables["test_A"], config=resources["synthesis"].config(),
                                  cache_dir=cache, progress=False)
    return table


@pytest.mark.slow
def test_synthesis_killed_part_way_sends_nothing_twice_and_is_never_taken_for_finished(
        ledger, model_dir, tables, tmp_path, instance):
    with ledger.fault("synthesis: SIGKILL part-way, then materialize again") as fault:
        lake = new_lake(tmp_path, tables)
        cache = lake / ".teacher_cache"
        with loopback(tables, latency_s=0.4) as server:
            run = spec(lake, model_dir, teacher=teacher(server.base_url, max_concurrency=1),
                       synthesis={**SYNTH, "size": 40})

            def not_finished():
                assert "synth_B.parquet" not in visible(lake), "synth_B appeared before the run finished"

            child = start_child(run, ["synth_B"], tmp_path)
            wait_for(lambda: len(cached_seeds(cache)) >= 3, child, 180, "three cached replies", watch=not_finished)
            child.kill()
            cached, sent_before = cached_seeds(cache), server.count
            answered_before = set(server.answered_seeds())
            not_finished()
            downstream = materialize(run, ["combined_C"], instance, raise_on_error=False)
            assert "synth_B has not been materialized" in failure_text(downstream)

            server.latency_s = 0.0
            result = materialize(run, ["synth_B"], instance)
            resent = [r.seed for r in server.requests[sent_before:] if r.seed in cached]
            fault.kept(resent == [], f"cached replies sent again: seeds {resent}")
            fault.kept(metadata(result, "synth_B")["report/requests_cached"] == len(cached), "cached replies unused")
            in_flight = {r.seed for r in server.requests[sent_before:]} & answered_before
            assert len(in_flight) <= 1, f"only the request in flight at the kill may go again: {in_flight}"
            table = pd.read_parquet(lake / "synth_B.parquet")
            fault.kept(table.equals(uninterrupted(run, tables, tmp_path / "fresh")),
                       "synth_B differs from an uninterrupted run")
        assert len(table) == 40


def test_a_corrupt_cache_entry_is_asked_again_and_the_rest_reused(ledger, model_dir, tables, tmp_path, instance):
    with ledger.fault("synthesis: a cut-off cache entry and a stray temporary file") as fault:
        lake = new_lake(tmp_path, tables)
        cache = lake / ".teacher_cache"
        with loopback(tables) as server:
            run = spec(lake, model_dir, teacher=teacher(server.base_url), synthesis=SYNTH)
            materialize(run, ["synth_B"], instance)
            first, sent = pd.read_parquet(lake / "synth_B.parquet"), server.count
            entries = sorted(cache.glob("*/*.json"))
            entries[0].write_bytes(entries[0].read_bytes()[:40])
            (entries[1].parent / ".tmp-stray.json").write_text('{"reply": "not finished')
            result = materialize(run, ["synth_B"], instance)
            assert server.count == sent + 1, "only the cut-off entry is asked for again"
            fault.kept(metadata(result, "synth_B")["report/requests_cached"] == len(entries) - 1, "cached replies")
            fault.kept(pd.read_parquet(lake / "synth_B.parquet").equals(first), "synth_B changed")


@pytest.mark.parametrize("case", ["oracle corpus is test_A", "teacher writes only test_A pairs"])
def test_a_teacher_corpus_equal_to_the_test_set_gives_no_synthetic_pair(
        ledger, model_dir, tables, tmp_path, instance, case):
    with ledger.fault(f"corpus equal to the test set: {case}"):
        lake = new_lake(tmp_path, tables)
        test_pairs = list(zip(tables["test_A"]["source"], tables["test_A"]["target"]))
        if case == "oracle corpus is test_A":
            path = tmp_path / "test_set.tsv"
            pd.DataFrame(test_pairs, columns=["de", "fr"]).to_csv(path, sep="\t", index=False)
            oracle = OracleTeacherCorpus(path=str(path), format="tsv", **DEMO_COLUMNS)
            result = materialize(spec(lake, model_dir), ["synth_B"], instance, raise_on_error=False, teacher=oracle)
            assert "its pool has 0 pairs disjoint from train_A/test_A" in failure_text(result)
        else:
            with loopback(tables, pool=test_pairs) as server:
                run = spec(lake, model_dir, teacher=teacher(server.base_url), synthesis={**SYNTH, "max_requests": 4})
                result = materialize(run, ["synth_B"], instance, raise_on_error=False)
            assert "filtered_contaminated=" in failure_text(result)
            assert "Raise setting max_requests" in failure_text(result)
        assert "synth_B.parquet" not in visible(lake), "no synth_B, and so nothing contaminated downstream"


# --- corpus input --------------------------------------------------------------------------------------

def write_big_tsv(path: Path, size: int) -> tuple[int, int]:
    """At least `size` bytes of TSV, by repeating a block of distinct long pairs; (rows, distinct)."""
    demo = pd.read_csv(DEMO_TSV, sep="\t")
    lines = [f"{i} " + " ".join([demo["de"][i % len(demo)]] * 60) + "\t" + f"{i} " + " ".join([demo["fr"][i % len(demo)]] * 60)
             for i in range(1000)]
    block = ("\n".join(lines) + "\n").encode()
    repeats = -(-size // len(block))
    with path.open("wb") as handle:
        handle.write(b"de\tfr\n")
        for _ in range(repeats):
            handle.write(block)
    return repeats * len(lines), len(lines)


@pytest.mark.slow
def test_a_gigabyte_corpus_streams_in_bounded_memory(ledger, tmp_path):
    with ledger.fault("corpus: a 1 GiB TSV file"):
        path = tmp_path / "big.tsv"
        try:
            rows, distinct = write_big_tsv(path, 1 << 30)
            assert path.stat().st_size >= 1 << 30
            env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
            done = subprocess.run([sys.executable, "-m", "mt_assets_tests.fault_support", "sample-rss", str(path)],
                                  cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
        finally:
            path.unlink(missing_ok=True)
        assert done.returncode == 0, done.stderr[-3000:]
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        growth_mib = (measured["maxrss_after_kib"] - measured["maxrss_before_kib"]) / 1024
        assert growth_mib < 64, f"peak memory grew by {growth_mib:.0f} MiB while streaming a 1024 MiB file"
        report = measured["report"]
        assert report["rows_read"] == rows and report["usable_pairs"] == distinct
        assert report["dropped: repeated source sentence"] == rows - distinct and measured["rows"] == 200


def demo_rows(n: int = 24) -> list[tuple[str, str]]:
    demo = pd.read_csv(DEMO_TSV, sep="\t").head(n)
    return [(normalize_text(s), normalize_text(t)) for s, t in zip(demo["de"], demo["fr"])]


ENTITY_ROWS = [
    ("Er sagte &quot;Hallo&quot;.", "Il a dit &amp;quot;Salut&amp;quot;."),
    ("Das ist Jean&#39;s Buch.", "C&#x27;est le livre de Jean."),
    ("Preis:&nbsp;10&nbsp;Euro", "Prix&nbsp;: 10 euros"),
]
ENTITY_CLEAN = [('Er sagte "Hallo".', 'Il a dit "Salut".'), ("Das ist Jean's Buch.", "C'est le livre de Jean."),
                ("Preis: 10 Euro", "Prix : 10 euros")]
BLANK_ROWS = [("   ", "Bonjour."), ("Hallo.", "\u00a0\u3000"), ("\u200b", "Merci."), ("Danke.", "\u200b\u200d\ufeff"),
              ("\u2003", "Bonjour à tous.")]


def dirty_corpus(case: str) -> tuple[bytes, list[tuple[str, str]], dict]:
    """The bytes of a TSV corpus with one kind of dirt, the pairs cleaning must give, and counts."""
    clean = demo_rows()
    rows, endings, prefix, counts = list(clean), ["\n"], b"", {}
    if case == "byte-order mark before the header":
        prefix = "\ufeff".encode()
    elif case == "byte-order marks inside (concatenated files)":
        for i in (5, 10):
            rows[i] = ("\ufeff" + rows[i][0], rows[i][1])
        rows[7] = (rows[7][0], rows[7][1] + "\ufeff")
        counts = {"byte_order_marks_removed": 3}
    elif case == "mixed line endings":
        endings = ["\r\n", "\n"]  # a lone CR ends no line (test_faults_inputs.py)
    elif case == "NUL bytes":
        rows[3] = (rows[3][0][:2] + "\x00" + rows[3][0][2:], rows[3][1])
        rows.append(("\x00\x00", "Bonjour tout le monde."))
        counts = {"nul_bytes_removed": 2, "dropped: blank text": 1}
    elif case == "HTML entities":
        rows += ENTITY_ROWS
        clean += ENTITY_CLEAN
        counts = {"html_entities_decoded": 6}
    elif case == "whitespace-only pairs":
        rows += BLANK_ROWS
        counts = {"dropped: blank text": len(BLANK_ROWS)}
    lines = ["de\tfr", *(f"{s}\t{t}" for s, t in rows)]
    text = "".join(line + endings[i % len(endings)] for i, line in enumerate(lines))
    return prefix + text.encode("utf-8"), clean, counts


@pytest.mark.parametrize("case", ["byte-order mark before the header", "byte-order marks inside (concatenated files)",
                                  "mixed line endings", "NUL bytes", "HTML entities", "whitespace-only pairs"])
def test_dirty_corpus_input_is_cleaned_and_counted(ledger, tmp_path, instance, case):
    with ledger.fault(f"corpus: {case}") as fault:
        data, expected, counts = dirty_corpus(case)
        path = tmp_path / "dirty.tsv"
        path.write_bytes(data)
        lake = tmp_path / "lake"
        resources = {"io_manager": DataLakeIOManager(base_path=str(lake)),
                     "experiment": Experiment(sample_size=len(expected), seed=3),
                     "corpus": LocalCorpus(path=str(path), format="tsv", **DEMO_COLUMNS)}
        from mt_assets.defs.data import opus_sample

        result = dg.materialize([opus_sample], resources=resources, instance=instance)
        sample = pd.read_parquet(lake / "opus_sample.parquet")
        fault.kept(list(zip(sample["source"], sample["target"])) == expected,
                   "pairs lost or altered by cleaning")
        cleaning = metadata(result, "opus_sample")["cleaning"]
        assert {key: cleaning.get(key, 0) for key in counts} == counts, cleaning
        assert not any(ch in text for text in [*sample["source"], *sample["target"]] for ch in "\r\x00\ufeff&")


# --- configuration -------------------------------------------------------------------------------------

CONFIG_FAULTS = {
    "unknown model id": ("adapter_B", "setting base_model.name_or_path",
                         {"base_model": HubBaseModel(name_or_path="no-such-org/no-such-model-7c1")}),
    "unknown model path": ("adapter_B", "not found (setting base_model.name_or_path)",
                           {"base_model": HubBaseModel(name_or_path="./no/such/model/folder")}),
    "unknown language code": ("opus_sample", "unknown language code 'xx' in setting experiment.target_lang",
                              {"experiment": Experiment(target_lang="xx", sample_size=50),
                               "corpus": LocalCorpus(path="/no/such/corpus.tsv", format="tsv")}),
    "sample larger than the corpus": ("opus_sample", "the sample size is 5000: lower setting experiment.sample_size",
                                      {"experiment": Experiment(sample_size=5000)}),
    "LoRA target module missing": ("adapter_B", "setting training.target_modules names ['c_attn']",
                                   {"training": {"target_modules": ["c_attn"]}}),
    "one of the LoRA target modules missing": ("adapter_B", "setting training.target_modules names ['query_key_value']",
                                               {"training": {"target_modules": ["q_proj", "query_key_value"]}}),
    "modules_to_save missing": ("adapter_B", "setting training.modules_to_save names ['embed_tokens']",
                                {"training": {"modules_to_save": ["embed_tokens"]}}),
    "max_length shorter than the prompt": ("adapter_B", "do not fit in max_length 12 tokens (setting training.max_length)",
                                           {"training": {"max_length": 12}}),
    "max_length beyond the model's positions": ("adapter_B", "setting training.max_length 1024 is more than the 256",
                                                {"training": {"max_length": 1024}}),
}


@pytest.mark.parametrize("case", list(CONFIG_FAULTS))
def test_bad_configuration_fails_clearly_before_any_expensive_work(
        ledger, model_dir, tables, tmp_path, instance, monkeypatch, case):
    import huggingface_hub.constants

    with ledger.fault(f"configuration: {case}") as fault:
        asset, message, overrides = CONFIG_FAULTS[case]
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network: fail now, not after retries
        lake = new_lake(tmp_path, tables) if asset == "adapter_B" else tmp_path / "lake"
        overrides = dict(overrides)
        settings = {"training": overrides.pop("training")} if "training" in overrides else {}
        looked_at_model = []
        real_skeleton = TinyBaseModel.load_skeleton
        monkeypatch.setattr(TinyBaseModel, "load_skeleton", lambda self: looked_at_model.append(1) or real_skeleton(self))
        selection = SPLIT if asset == "opus_sample" else [asset]
        result = materialize(spec(lake, model_dir, **settings), selection, instance, raise_on_error=False, **overrides)
        assert not result.success
        assert message in failure_text(result), failure_text(result)[-2000:]
        assert not (lake / ".staging").exists(), "training started"
        if case == "max_length shorter than the prompt":
            assert looked_at_model == [], "the model was looked at before the setting was checked"
        if lake.exists():
            fault.kept(visible(lake) == ({f"{t}.parquet" for t in SPLIT} if asset == "adapter_B" else set()),
                       f"the lake changed: {visible(lake)}")


# --- the teacher ---------------------------------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


TEACHER_FAULTS = {
    "hang past the timeout, once": ({"faults": {0: Fault("hang", seconds=1.5)}}, {"timeout_s": 0.4}, None),
    "hang past the timeout, every time": ({"faults": {i: Fault("hang", seconds=1.0) for i in range(3)}},
                                          {"timeout_s": 0.3, "max_attempts": 3, "max_concurrency": 1},
                                          "no answer within timeout_s=0.3"),
    "connection refused": ({}, {"base_url": "refused"}, "connection failed"),
    "429 storm": ({"faults": {i: Fault("rate_limit", retry_after="0.02") for i in range(15)}},
                  {"max_attempts": 20}, None),
    "truncated and invalid HTTP bodies": ({"faults": {0: Fault("truncated_body"), 2: Fault("truncated_body"),
                                                      4: Fault("invalid_http_json")}}, {}, None),
    "reply cut off at the token limit": ({"faults": {1: Fault("length")}}, {"max_concurrency": 1}, None),
}


@pytest.mark.parametrize("case", list(TEACHER_FAULTS))
def test_teacher_faults_are_ridden_out_or_fail_clearly(ledger, model_dir, tables, tmp_path, instance, case):
    with ledger.fault(f"teacher: {case}") as fault:
        server_faults, settings, error = TEACHER_FAULTS[case]
        lake = new_lake(tmp_path, tables)
        with loopback(tables, **server_faults) as server:
            url = f"http://127.0.0.1:{closed_port()}/v1" if settings.get("base_url") == "refused" else server.base_url
            run = spec(lake, model_dir, teacher=teacher(url, **{k: v for k, v in settings.items() if k != "base_url"}),
                       synthesis=SYNTH)
            result = materialize(run, ["synth_B"], instance, raise_on_error=False)
        if error:
            assert error in failure_text(result) and "setting base_url" in failure_text(result), failure_text(result)
            assert "synth_B.parquet" not in visible(lake)
            return
        assert result.success, failure_text(result)
        scripted = server_faults.get("faults", {})
        assert [r.fault for r in server.requests if r.fault] == [f.kind for _, f in sorted(scripted.items())], \
            "every scripted fault reached the client"
        answered = server.answered_seeds()
        fault.kept(len(answered) == len(set(answered)), "a reply was paid for twice")
        table = pd.read_parquet(lake / "synth_B.parquet")
        fault.kept(len(table) == SYNTH["size"], f"synth_B has {len(table)} of {SYNTH['size']} pairs")
        if case == "reply cut off at the token limit":
            assert metadata(result, "synth_B")["report/replies_malformed"] == 1


@pytest.mark.parametrize("case", ["401 for the key", "key variable unset"])
def test_a_refused_or_missing_key_fails_at_once_naming_the_variable_never_the_key(
        ledger, model_dir, tables, tmp_path, instance, monkeypatch, capfd, case):
    with ledger.fault(f"teacher: {case}") as fault:
        if case == "401 for the key":
            monkeypatch.setenv(KEY_ENV, CANARY)
        else:
            monkeypatch.delenv(KEY_ENV, raising=False)
        lake = new_lake(tmp_path, tables)
        with loopback(tables, api_key="sk-the-right-key") as server:
            run = spec(lake, model_dir, teacher=teacher(server.base_url, api_key_env=KEY_ENV), synthesis=SYNTH)
            result = materialize(run, ["synth_B"], instance, raise_on_error=False)
        failure = failure_text(result)
        if case == "401 for the key":
            assert "HTTP 401" in failure and f"Set {KEY_ENV} to a valid key" in failure, failure[-2000:]
            assert server.count <= 2, "a refused key is not retried (one request per worker at most)"
        else:
            assert f"environment variable {KEY_ENV} is not set" in failure and server.count == 0
        assert "synth_B.parquet" not in visible(lake)
        captured = capfd.readouterr()
        fault.no_secret(CANARY, {"step failure": failure, "stdout and stderr": captured.out + captured.err,
                                 "event log": "\n".join(dg.serialize_value(e) for e in instance.all_logs(result.run_id))})


def test_instructions_inside_teacher_output_are_only_data(ledger, model_dir, tables, tmp_path, instance):
    with ledger.fault("teacher: instructions inside its output") as fault:
        lake = new_lake(tmp_path, tables)
        cache = lake / ".teacher_cache"
        with loopback(tables, content_faults=lambda seed: ["injection"]) as server:
            run = spec(lake, model_dir, teacher=teacher(server.base_url), synthesis=SYNTH)
            result = materialize(run, ["synth_B"], instance)
        table = pd.read_parquet(lake / "synth_B.parquet")
        injected = table[table["source"] == INJECTION_PAIR[0]]
        assert len(injected) == 1 and injected["target"].iloc[0] == INJECTION_PAIR[1], "kept verbatim, as data"
        fault.kept(len(cached_seeds(cache)) == server.count, "the cache it says to delete")
        assert metadata(result, "synth_B")["report/requests_sent"] == server.count, "no request it asked for"
        assert visible(lake) == {f"{t}.parquet" for t in [*SPLIT, "synth_B"]}, "nothing else was touched"


# --- secrets -------------------------------------------------------------------------------------------

def every_file(*folders: Path):
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                yield path


@pytest.mark.slow
def test_the_api_key_shows_up_nowhere(ledger, model_dir, tables, tmp_path, monkeypatch, caplog, capfd):
    with ledger.fault("secrets: a canary API key through a good run and a 401") as fault:
        monkeypatch.setenv(KEY_ENV, CANARY)
        caplog.set_level(logging.DEBUG)
        lake, refused_lake = new_lake(tmp_path, tables), new_lake(tmp_path, tables, "refused_lake")
        texts: dict[str, str] = {}
        home = tmp_path / "dagster_home"
        home.mkdir()
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            with loopback(tables, api_key=CANARY) as good, loopback(tables, api_key="sk-the-right-key") as refusing:
                run = spec(lake, model_dir, teacher=teacher(good.base_url, api_key_env=KEY_ENV),
                           synthesis=SYNTH, training={"max_steps": 2})
                ok = materialize(run, ["synth_B", "adapter_C"], instance)
                refused_run = spec(refused_lake, model_dir, teacher=teacher(refusing.base_url, api_key_env=KEY_ENV),
                                   synthesis=SYNTH)
                failed = materialize(refused_run, ["synth_B"], instance, raise_on_error=False)
                with pytest.raises(Exception) as raised:
                    materialize(refused_run, ["synth_B"], instance)
            assert good.requests[0].authorization == f"Bearer {CANARY}", "the key did reach the server"
            assert refusing.requests[0].authorization == f"Bearer {CANARY}"
            assert ok.success and not failed.success and KEY_ENV in failure_text(failed)

            for result in (ok, failed):
                run_record = instance.get_run_by_id(result.run_id)
                texts[f"run config of {result.run_id}"] = json.dumps(run_record.run_config, default=str)
                texts[f"event log of {result.run_id}"] = "\n".join(
                    dg.serialize_value(entry) for entry in instance.all_logs(result.run_id))
                texts[f"materialization metadata of {result.run_id}"] = "\n".join(
                    str(event.event_specific_data) for event in result.get_asset_materialization_events())
            texts["resource settings (UI)"] = json.dumps(
                {k: v.model_dump() for k, v in run_resources(run).items() if hasattr(v, "model_dump")}, default=str)
            texts["step failure"] = failure_text(failed)
            texts["exception"] = "".join(traceback.format_exception(raised.value))
        texts["log records"] = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
        captured = capfd.readouterr()
        texts["stdout and stderr"] = captured.out + captured.err
        files = list(every_file(home, lake, refused_lake))
        assert any(p.suffix == ".parquet" for p in files) and (lake / "adapter_C" / "adapter_config.json").is_file()
        assert any(p.suffix == ".db" for p in files), "the instance keeps runs and events on disk"
        assert "synth_B" in texts[f"event log of {failed.run_id}"] and "STEP_FAILURE" in texts[f"event log of {failed.run_id}"]
        assert all(texts[k] for k in ("step failure", "exception", "log records", "stdout and stderr")), "searched text"
        fault.no_secret(CANARY, {**texts, **{str(path): path.read_bytes() for path in files}})
        assert FaultRecord.hits(CANARY, good.requests[0].authorization) == 1, "the sweep finds the key where it belongs"
        assert "Incorrect API key provided" not in texts["exception"]
