"""Fault suite, translate mode: hostile source pools (train_A itself, empty files, line separators
inside sentences) and hostile replies (several lines, only a label), through the real graph with the
loopback server's completions endpoint. Each fault counts into the session's summary line."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mt_assets.defs.data import Experiment, LocalCorpus, data_assets
from mt_assets.defs.io_manager import DataLakeIOManager
from mt_assets.defs.profiles import PACKAGE_DATA
from mt_assets.defs.synthetic import OpenAICompatibleTeacher, SourcePool, Synthesis, synth_B_asset
from mt_assets.lib.data.text import normalize_text
from mt_assets_tests.loopback_teacher import LoopbackTeacher

DEMO_TSV = PACKAGE_DATA / "demo_corpus.tsv"
DEMO = pd.read_csv(DEMO_TSV, sep="\t")
SPLIT = ["opus_sample", "train_A", "test_A"]


def resources(lake: Path, server: LoopbackTeacher, pool: SourcePool, size: int = 6) -> dict:
    return {"io_manager": DataLakeIOManager(base_path=str(lake)),
            "experiment": Experiment(sample_size=60, seed=42, test_fraction=0.2),
            "corpus": LocalCorpus(path=str(DEMO_TSV), format="tsv", source_column="de", target_column="fr"),
            "teacher": OpenAICompatibleTeacher(base_url=server.base_url, model="loopback/gemma", api_key_env=None,
                                               max_attempts=2, backoff_base_s=0.01),
            "synthesis": Synthesis(mode="translate", size=size, few_shot=2, cache_dir=str(lake / ".teacher_cache"),
                                   source_pool=pool)}


def run(lake: Path, server: LoopbackTeacher, pool: SourcePool, instance, size: int = 6):
    """The split, then synth_B; synth_B's result (raise_on_error off)."""
    spec = resources(lake, server, pool, size)
    assets = [*data_assets, synth_B_asset()]
    assert dg.materialize(assets, resources=spec, instance=instance, selection=SPLIT).success
    return dg.materialize(assets, resources=spec, instance=instance, selection=["synth_B"], raise_on_error=False)


def failure_text(result) -> str:
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = event.step_failure_data.error
    return error.message + "".join(cause.message for cause in [error.cause] if cause is not None)


def loopback() -> LoopbackTeacher:
    return LoopbackTeacher(list(zip(DEMO["de"], DEMO["fr"])), pairs_per_reply=4)


def test_a_pool_that_is_train_A_is_refused_before_any_request(ledger, tmp_path, instance):
    with ledger.fault("translate mode: source pool = train_A") as fault, loopback() as server:
        first = run(tmp_path / "lake", server, SourcePool(path=str(DEMO_TSV), format="tsv", source_column="de",
                                                          target_column="fr"), instance)
        assert first.success  # the pool holds more than train_A and test_A
        train = pd.read_parquet(tmp_path / "lake" / "train_A.parquet")
        pool_file = tmp_path / "train_A.tsv"
        train[["source", "target"]].rename(columns={"source": "de", "target": "fr"}).to_csv(
            pool_file, sep="\t", index=False)
        sent = server.count
        result = run(tmp_path / "lake2", server, SourcePool(path=str(pool_file), format="tsv"), instance)
        assert not result.success and server.count == sent
        message = failure_text(result)
        assert (f"setting synthesis.source_pool (train_A.tsv:tsv) has 0 usable sentences but synthesis needs 6"
                in message), message
        assert f"of its {len(train)} rows, {len(train)} are sentences of train_A or test_A" in message, message
        fault.notes.append("refused naming synthesis.source_pool and the counts")


@pytest.mark.parametrize("fmt", ["moses", "text"])
def test_an_empty_pool_file_is_a_clear_error(ledger, tmp_path, instance, fmt):
    with ledger.fault(f"translate mode: empty {fmt} pool file") as fault, loopback() as server:
        for name in (["pool.de", "pool.fr"] if fmt == "moses" else ["pool.txt"]):
            (tmp_path / name).write_bytes(b"")
        path = tmp_path / ("pool" if fmt == "moses" else "pool.txt")
        result = run(tmp_path / "lake", server, SourcePool(path=str(path), format=fmt), instance)
        assert not result.success and server.count == 0
        assert "has 0 usable sentences but synthesis needs 6" in failure_text(result)
        assert "of its 0 rows" in failure_text(result)
        fault.notes.append("refused before any request")


def test_line_separators_inside_pool_sentences_stay_inside_their_sentence(ledger, tmp_path, instance):
    with ledger.fault("translate mode: U+2028 and other line breaks inside pool sentences") as fault:
        words = ["Hund", "Katze", "Vogel", "Fisch", "Pferd", "Maus", "Kuh", "Ziege"]
        sentences = [f"Der {word} schläft,\u2028und der Garten\u2029 ist still." for word in words]
        (tmp_path / "pool.txt").write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
        animals = ["chien", "chat", "oiseau", "poisson", "cheval", "souris", "vache", "chèvre"]
        translations = {normalize_text(s): f"Le {animal} dort, et le jardin est calme."
                        for animal, s in zip(animals, sentences)}
        with LoopbackTeacher(list(zip(DEMO["de"], DEMO["fr"])), pairs_per_reply=4,
                             translations=translations) as server:
            result = run(tmp_path / "lake", server, SourcePool(path=str(tmp_path / "pool.txt"), format="text"),
                         instance, size=8)
            prompts = server.prompts()
        assert result.success
        synth = pd.read_parquet(tmp_path / "lake" / "synth_B.parquet")
        fault.kept(sorted(synth["source"]) == sorted(translations),
                   f"8 pool sentences in, sources out: {list(synth['source'])}")
        assert all(translations[s] == t for s, t in zip(synth["source"], synth["target"]))
        for prompt in prompts:
            assert "\u2028" not in prompt and "\u2029" not in prompt
            assert len(prompt.splitlines()) == 8  # 2 examples and the request, 2 lines each, 2 blank


def test_replies_of_several_lines_or_only_a_label_are_parsed_and_counted(ledger, tmp_path, instance):
    kinds = {0: ["multiline"], 1: ["label_only"], 2: ["labelled"], 3: ["empty"]}
    with ledger.fault("translate mode: replies of several lines, only a label, a label, nothing") as fault:
        with LoopbackTeacher(list(zip(DEMO["de"], DEMO["fr"])), pairs_per_reply=4,
                             line_faults=lambda seed: kinds.get(seed % 4, [])) as server:
            result = run(tmp_path / "lake", server, SourcePool(path=str(DEMO_TSV), format="tsv", source_column="de",
                                                               target_column="fr"), instance, size=10)
        assert result.success
        meta = {k: v.value for k, v in result.asset_materializations_for_node("synth_B")[0].metadata.items()}
        processed = meta["report/requests_processed"]
        by_kind = {kind: sum(1 for i in range(processed) if i % 4 == seed) for seed, (kind,) in kinds.items()}
        assert meta["report/replies_malformed"] == by_kind["label_only"] + by_kind["empty"], meta
        assert meta["report/reply_lines_dropped"] == by_kind["multiline"], meta
        synth = pd.read_parquet(tmp_path / "lake" / "synth_B.parquet")
        reference = dict(zip(DEMO["de"], DEMO["fr"]))
        fault.kept(len(synth) == 10 and all(reference[s] == t for s, t in zip(synth["source"], synth["target"])),
                   "a labelled or multi-line reply lost its translation")
        assert not synth["target"].str.contains("French|deuxième", regex=True).any()
