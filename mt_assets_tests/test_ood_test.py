"""The optional out-of-domain test set: test_ood (a seeded Tatoeba sample that shares no sentence with
opus_sample) exists only for a profile with an ``ood_test`` section, and every system is scored on it."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from mt_assets.definitions import build_definitions
from mt_assets.defs.data import LocalCorpus, OodTest, data_assets, ood_assets, ood_checks
from mt_assets.defs.evaluation import Evaluation
from mt_assets.defs.profiles import build_resources, load_profile
from mt_assets.lib.data.text import sentence_key
from mt_assets.lib.scoring.charts import bleu_bars
from mt_assets_tests.conftest import data_resources
from mt_assets_tests.e2e_support import graph_resources, tiny_base


def _with_ood(profile: dict, folder) -> dict:
    return {**profile, "ood_test": {"name": "tatoeba", "size": 30, "corpus": {
        "type": "local", "path": str(folder / "tatoeba-deu-fra" / "test.txt"), "format": "tatoeba"}}}


def _graph_keys(defs: dg.Definitions) -> set[str]:
    return {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}


def test_the_graph_has_test_ood_only_when_the_profile_asks(tmp_path):
    profile = load_profile("tiny")
    assert "test_ood" not in _graph_keys(build_definitions(profile))
    assert "ood_test" not in build_resources(profile)
    with_ood = _with_ood(profile, tmp_path)  # the section alone decides; the file is read when materialized
    defs = build_definitions(with_ood)
    assert "test_ood" in _graph_keys(defs)
    parents = {k.to_user_string() for k in defs.resolve_asset_graph().get(dg.AssetKey("translations")).parent_keys}
    assert "test_ood" in parents
    resources = build_resources(with_ood)
    assert resources["ood_test"].name == "tatoeba" and resources["ood_test"].size == 30
    assert resources["ood_corpus"].format == "tatoeba"


def test_test_ood_is_a_seeded_sample_sharing_no_sentence_with_opus_sample(shared_data, lake, instance):
    tatoeba = LocalCorpus(path=str(shared_data / "tatoeba-deu-fra" / "test.txt"), format="tatoeba")
    graph = [*data_assets, *ood_assets, *ood_checks]
    # opus_sample from the same file: every one of its pairs is in the stream test_ood reads, and must be left out
    resources = {**data_resources(lake, tatoeba, sample_size=60, seed=3), "ood_corpus": tatoeba,
                 "ood_test": OodTest(name="tatoeba", size=50)}
    result = dg.materialize(graph, resources=resources, instance=instance, selection=["opus_sample", "test_ood"])
    assert result.success
    sample, ood = pd.read_parquet(lake / "opus_sample.parquet"), pd.read_parquet(lake / "test_ood.parquet")
    assert len(ood) == 50
    seen = {sentence_key(t) for t in (*sample["source"], *sample["target"])}
    assert not {sentence_key(t) for t in (*ood["source"], *ood["target"])} & seen
    excluded = result.asset_materializations_for_node("test_ood")[0].metadata["excluded_seen_in_opus_sample"].value
    assert excluded >= len(sample)
    checks = [e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey("test_ood")]
    assert len(checks) == 3 and all(e.passed for e in checks)
    again = dg.materialize(graph, resources=resources, instance=instance, selection=["test_ood"])
    assert again.success and pd.read_parquet(lake / "test_ood.parquet").equals(ood)  # seeded


def test_bleu_chart_draws_a_row_of_panels_per_test_set():
    row = {"bleu": 10.0, "bleu_ci95": 1.0, "chrf": 30.0, "chrf_ci95": 2.0}
    one = pd.DataFrame([{"system": s, "test_set": "test_A", **row} for s in ("A", "B")])
    two = pd.concat([one, one.assign(test_set="tatoeba")], ignore_index=True)
    from io import BytesIO

    from matplotlib import image as mpimg

    heights = [mpimg.imread(BytesIO(bleu_bars(t, "t"))).shape[0] for t in (one, two)]
    assert heights[1] > 1.7 * heights[0]


@pytest.mark.e2e
def test_every_system_is_scored_on_both_test_sets(shared_data, tmp_path, tiny_model_dir):
    lake = tmp_path / "lake"
    defs = build_definitions(_with_ood(load_profile("tiny"), shared_data))
    resources = {**graph_resources(lake, tiny_base(tiny_model_dir), training={"epochs": 1}),
                 "ood_corpus": LocalCorpus(path=str(shared_data / "tatoeba-deu-fra" / "test.txt"), format="tatoeba"),
                 "ood_test": OodTest(name="tatoeba", size=30),
                 "evaluation": Evaluation(batch_size=32, max_new_tokens=20, n_bootstrap=100, fewshot_k=1)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([*defs.assets, *defs.asset_checks], resources=resources, instance=instance)
    assert result.success
    test_a, ood = pd.read_parquet(lake / "test_A.parquet"), pd.read_parquet(lake / "test_ood.parquet")
    translations = pd.read_parquet(lake / "translations.parquet")
    for name, test in (("test_A", test_a), ("tatoeba", ood)):
        for _, rows in translations[translations["test_set"] == name].groupby("system"):
            assert list(rows["pair_id"]) == list(test["pair_id"])
    table = pd.read_parquet(lake / "bleu_table.parquet")
    systems = ["A", "A_fewshot", "B", "C", "D", "E"]
    assert list(zip(table["test_set"], table["system"])) == [(t, s) for t in ("test_A", "tatoeba") for s in systems]
    assert list(table["segments"]) == [len(test_a)] * 6 + [len(ood)] * 6
    assert table.loc[table["system"] != "A", "bleu_p_vs_A"].notna().all()
    metadata = result.asset_materializations_for_node("bleu_table")[0].metadata
    assert {f"bleu/{s}" for s in systems} | {f"bleu/tatoeba/{s}" for s in systems} <= set(metadata)
    for name in ("translations", "bleu_table"):
        schema = defs.resolve_asset_graph().get(dg.AssetKey(name)).metadata["dagster/column_schema"]
        assert {c.name for c in schema.columns} == set(pd.read_parquet(lake / f"{name}.parquet").columns), name


def test_quality_profile_is_gemma_on_multi30k_with_tatoeba_out_of_domain():
    profile, demo = load_profile("quality"), load_profile("demo")
    resources = build_resources(profile)
    assert profile["base_model"] == demo["base_model"]
    assert (resources["corpus"].format, resources["ood_corpus"].format) == ("moses", "tatoeba")
    assert resources["corpus"].path.endswith("multi30k/train")
    assert (resources["ood_test"].name, resources["ood_test"].size) == ("tatoeba", 150)
    assert (resources["experiment"].sample_size, resources["experiment"].test_fraction) == (1000, 0.2)
    assert resources["teacher"].__class__.__name__ == "OracleTeacherCorpus"
    assert (resources["evaluation"].fewshot_k, resources["evaluation"].test_set_name) == (3, "multi30k")
    assert "test_ood" in _graph_keys(build_definitions(profile))


def test_quality_profile_reads_the_shared_corpora(shared_data):
    resources = build_resources(load_profile("quality"))
    teacher = LocalCorpus(path=resources["teacher"].path, format=resources["teacher"].format)  # the oracle's file
    for corpus in (resources["corpus"], resources["ood_corpus"], teacher):
        first = next(row for row in corpus.rows("de", "fr") if row.skipped is None)
        assert first.source and first.target


def test_bleu_command_shows_the_test_set_only_when_there_are_several(tmp_path, capsys):
    from mt_assets import cli
    from mt_assets.lib.scoring.metrics import score_systems

    references = ["le chat dort", "il pleut"]
    one = score_systems({"A": ["un chien", "soleil"], "B": references}, references, ("A",), n_bootstrap=20)
    one["off_target_rate"], one["empty_outputs"], one["test_set"] = 0.0, 0, "test_A"
    two = pd.concat([one, one.assign(test_set="tatoeba", segments=3)], ignore_index=True)
    profile = tmp_path / "profile.yaml"
    profile.write_text(f"data_lake: {tmp_path / 'lake'}\n")
    (tmp_path / "lake").mkdir()
    shown = {}
    for name, table in (("one", one), ("two", two)):
        table.to_parquet(tmp_path / "lake" / "bleu_table.parquet", index=False)
        assert cli.main(["bleu", "--profile", str(profile)]) == 0
        shown[name] = capsys.readouterr().out
    assert "test set" not in shown["one"] and "2 test pairs" in shown["one"]
    assert "| test set" in shown["two"] and "test pairs: test_A 2, tatoeba 3" in shown["two"]
    rows = [line.split("|")[1:3] for line in shown["two"].splitlines() if line.startswith("| ") and "system" not in line]
    assert [(s.strip(), t.strip()) for s, t in rows] == [("A", "test_A"), ("B", "test_A"), ("A", "tatoeba"),
                                                           ("B", "tatoeba")]
