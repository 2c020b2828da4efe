"""The data assets materialized through Dagster on every local format, the shared Multi30k
corpus and a Hub-layout dataset folder, with their checks; the blocking leak check."""

from __future__ import annotations

import gzip
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mt_assets.defs import data as data_defs
from mt_assets.defs.data import data_assets, data_checks
from mt_assets.defs.data import HuggingFaceCorpus, LocalCorpus
from mt_assets_tests.conftest import data_resources

DEMO_TSV = Path(data_defs.__file__).resolve().parent.parent / "data" / "demo_corpus.tsv"


def demo_pairs(n: int = 60) -> pd.DataFrame:
    return pd.read_csv(DEMO_TSV, sep="\t").head(n)


def materialize(resources, instance, extra_assets=(), raise_on_error=True):
    return dg.materialize([*data_assets, *data_checks, *extra_assets], resources=resources,
                          instance=instance, raise_on_error=raise_on_error)


def check_results(result) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def assert_materialized(result, lake: Path, sample_size: int):
    assert result.success
    checks = check_results(result)
    assert len(checks) == 11 and all(checks.values()), checks
    sample = pd.read_parquet(lake / "opus_sample.parquet")
    train = pd.read_parquet(lake / "train_A.parquet")
    test = pd.read_parquet(lake / "test_A.parquet")
    assert len(sample) == sample_size and len(train) + len(test) == sample_size
    assert set(train["pair_id"]).isdisjoint(test["pair_id"])
    assert {"pair_id", "source", "target", "source_lang", "target_lang", "origin"} <= set(sample.columns)
    return sample


def write_format(fmt: str, folder: Path) -> LocalCorpus:
    pairs = demo_pairs()
    if fmt == "tsv":
        pairs.to_csv(folder / "c.tsv", sep="\t", index=False)
        return LocalCorpus(path=str(folder / "c.tsv"), format="tsv", source_column="de", target_column="fr")
    if fmt == "parquet":
        pairs.rename(columns={"de": "src", "fr": "tgt"}).to_parquet(folder / "c.parquet")
        return LocalCorpus(path=str(folder / "c.parquet"), format="parquet", source_column="src", target_column="tgt")
    if fmt == "moses":
        for lang in ("de", "fr"):
            (folder / f"c.{lang}.gz").write_bytes(gzip.compress("\n".join(pairs[lang]).encode() + b"\n"))
        return LocalCorpus(path=str(folder / "c"), format="moses")
    lines = [f"deu\tfra\t{d}\t{f}" for d, f in zip(pairs["de"], pairs["fr"])]
    (folder / "t.txt").write_text("\n".join(lines) + "\n")
    return LocalCorpus(path=str(folder / "t.txt"), format="tatoeba")


@pytest.mark.parametrize("fmt", ["tsv", "parquet", "moses", "tatoeba"])
def test_each_local_format_materializes(fmt, tmp_path, lake, instance):
    corpus = write_format(fmt, tmp_path)
    sample = assert_materialized(materialize(data_resources(lake, corpus), instance), lake, 40)
    assert set(sample["source"]) <= set(demo_pairs()["de"])
    assert (sample["origin"] == corpus.origin).all()


def test_hub_layout_dataset_folder_materializes(tmp_path, lake, instance):
    folder = tmp_path / "opus-100-de-fr"
    folder.mkdir()
    rows = [{"translation": {"de": d, "fr": f}} for d, f in zip(demo_pairs()["de"], demo_pairs()["fr"])]
    pd.DataFrame(rows).to_json(folder / "test.jsonl", orient="records", lines=True, force_ascii=False)
    corpus = HuggingFaceCorpus(dataset=str(folder), config=None, split="test")
    assert_materialized(materialize(data_resources(lake, corpus), instance), lake, 40)


@pytest.mark.shared_data
def test_shared_multi30k_materializes(shared_data, lake, instance):
    corpus = LocalCorpus(path=str(shared_data / "multi30k" / "train"), format="moses")
    sample = assert_materialized(materialize(data_resources(lake, corpus, sample_size=1000), instance), lake, 1000)
    assert sample["corpus_row"].max() > 1000, "the sample should span the corpus, not its head"


@pytest.mark.shared_data
def test_shared_tatoeba_materializes(shared_data, lake, instance):
    corpus = LocalCorpus(path=str(shared_data / "tatoeba-deu-fra" / "test.txt"), format="tatoeba")
    assert_materialized(materialize(data_resources(lake, corpus, sample_size=500), instance), lake, 500)


def test_sample_is_identical_for_one_seed_and_differs_for_another(tmp_path, instance):
    corpus = LocalCorpus(path=str(DEMO_TSV), format="tsv", source_column="de", target_column="fr")
    ids = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        lake = tmp_path / name
        materialize(data_resources(lake, corpus, seed=seed), instance)
        ids[name] = (list(pd.read_parquet(lake / "train_A.parquet")["pair_id"]),
                     list(pd.read_parquet(lake / "test_A.parquet")["pair_id"]))
    assert ids["a"] == ids["b"]
    assert set(ids["a"][0]) != set(ids["c"][0]) and set(ids["a"][1]) != set(ids["c"][1])


def test_blocking_overlap_check_fails_a_planted_leak_and_stops_downstream(lake, instance, monkeypatch):
    real_split = data_defs.split_train_test

    def leaky_split(sample, fraction, seed):
        train, test = real_split(sample, fraction, seed)
        return pd.concat([train, test.head(1)], ignore_index=True), test

    monkeypatch.setattr(data_defs, "split_train_test", leaky_split)

    @dg.asset
    def scored_on_test(test_A: pd.DataFrame) -> pd.DataFrame:
        return test_A

    corpus = LocalCorpus(path=str(DEMO_TSV), format="tsv", source_column="de", target_column="fr")
    result = materialize(data_resources(lake, corpus), instance, [scored_on_test], raise_on_error=False)
    checks = check_results(result)
    assert checks["test_A:no_test_pair_in_train"] is False
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "no_test_pair_in_train")
    assert evaluation.metadata["flagged"].value == 1
    assert not (lake / "scored_on_test.parquet").exists(), "the blocking check must stop downstream assets"


def test_fewer_pairs_than_requested_fails_naming_the_setting(lake, instance):
    corpus = LocalCorpus(path=str(DEMO_TSV), format="tsv", source_column="de", target_column="fr")
    with pytest.raises(Exception, match="sample size is 5000: lower setting experiment.sample_size"):
        materialize(data_resources(lake, corpus, sample_size=5000), instance)


def test_unknown_language_fails_naming_the_setting(lake, instance):
    corpus = LocalCorpus(path=str(DEMO_TSV), format="tsv", source_column="de", target_column="fr")
    with pytest.raises(Exception, match="unknown language code 'zz' in setting experiment.target_lang"):
        materialize(data_resources(lake, corpus, target_lang="zz"), instance)
