"""Tier 4: the whole asset graph materialized on the tiny local model, through the real resources
(local corpus, tiny GPT-Neo, oracle teacher, data lake in a temporary folder), with its checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg

from mt_assets.definitions import defs
from mt_assets.lib.hashing import folder_hash, table_hash
from mt_assets_tests.e2e_support import graph_resources, tiny_base

pytestmark = pytest.mark.e2e

BLEU_COLUMNS = {
    "system", "bleu", "bleu_ci95", "chrf", "chrf_ci95", "bleu_p_vs_A", "chrf_p_vs_A", "bleu_p_vs_B", "chrf_p_vs_B",
    "bleu_signature", "chrf_signature", "segments", "off_target_rate", "empty_outputs", "test_table_hash",
    "adapter", "adapter_hash", "training_table", "training_table_hash", "base_model", "base_revision", "fewshot_pair_ids",
}


def everything():
    return [*defs.assets, *defs.asset_checks]


@pytest.fixture(scope="module")
def materialized(tmp_path_factory, tiny_model_dir):
    lake = tmp_path_factory.mktemp("e2e") / "lake"
    resources = graph_resources(lake, tiny_base(tiny_model_dir))
    with dg.instance_for_test() as instance:
        result = dg.materialize(everything(), resources=resources, instance=instance)
        yield lake, result, resources


def test_every_asset_and_check_succeeds(materialized):
    lake, result, _ = materialized
    assert result.success
    produced = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert produced == {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    checks = {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}
    assert len(checks) == len(defs.resolve_asset_graph().asset_check_keys)
    # Whether B beats A is a quality question, which the tiny model cannot settle (its 12 test pairs flip
    # with float rounding across CPUs); the Gemma tests and benchmarks answer it. Here: the check ran, as a
    # warning, and its verdict is the one its own numbers give.
    quality = checks.pop("bleu_table:b_beats_a")
    assert all(e.passed for e in checks.values()), [k for k, e in checks.items() if not e.passed]
    numbers = {key: value.value for key, value in quality.metadata.items()}
    assert quality.severity == dg.AssetCheckSeverity.WARN
    assert quality.passed == (numbers["bleu_B"] > numbers["bleu_A"]
                              or (numbers["bleu_B"] == numbers["bleu_A"] and numbers["chrf_B"] > numbers["chrf_A"]))


def test_adapters_hold_weights_config_lineage_and_log(materialized):
    lake, result, resources = materialized
    for name, table in (("adapter_B", "train_A"), ("adapter_C", "synth_B"), ("adapter_D", "combined_C")):
        folder = lake / name
        assert {"adapter_model.safetensors", "adapter_config.json", "lineage.json", "training_log.csv",
                "training_summary.json"} <= {p.name for p in folder.iterdir()}
        assert not (folder / "checkpoints").exists()
        lineage = json.loads((folder / "lineage.json").read_text())
        assert lineage["training_table"] == table
        assert lineage["training_table_hash"] == table_hash(pd.read_parquet(lake / f"{table}.parquet"))
        assert lineage["base_model"] == resources["base_model"].model_path()
        metadata = result.asset_materializations_for_node(name)[0].metadata
        for key in ("trainable_parameters", "steps", "final_train_loss", "validation_loss", "wall_seconds",
                    "training_table_hash"):
            assert key in metadata, f"{name} lacks metadata {key}"
        assert metadata["trainable_parameters"].value > 0 and metadata["steps"].value > 0
        assert metadata["content_hash"].value == folder_hash(folder)


def test_synthetic_data_is_twice_train_and_labelled(materialized):
    lake, _, _ = materialized
    train, synth = pd.read_parquet(lake / "train_A.parquet"), pd.read_parquet(lake / "synth_B.parquet")
    combined = pd.read_parquet(lake / "combined_C.parquet")
    assert len(synth) == 2 * len(train)
    assert synth["origin"].str.startswith("synthetic:oracle:").all()
    assert len(combined) == len(train) + len(synth)


def test_translations_cover_every_system_and_pair(materialized):
    lake, _, _ = materialized
    translations, test = pd.read_parquet(lake / "translations.parquet"), pd.read_parquet(lake / "test_A.parquet")
    assert sorted(translations["system"].unique()) == ["A", "A_fewshot", "B", "C", "D", "E"]
    for _, rows in translations.groupby("system"):
        assert list(rows["pair_id"]) == list(test["pair_id"])
    assert not translations["hypothesis"].str.contains("\n").any()


def test_bleu_table_has_every_column_and_lineage(materialized):
    lake, _, _ = materialized
    table = pd.read_parquet(lake / "bleu_table.parquet").set_index("system", drop=False)
    assert BLEU_COLUMNS <= set(table.columns)
    assert list(table["system"]) == ["A", "A_fewshot", "B", "C", "D", "E"]
    assert table["bleu_signature"].str.contains("nrefs:1").all() and table["bleu_signature"].str.contains("bs:200").all()
    assert (table["test_table_hash"] == table_hash(pd.read_parquet(lake / "test_A.parquet"))).all()
    assert table.loc["A", "adapter_hash"] == "" and table.loc["B", "adapter_hash"] == folder_hash(lake / "adapter_B")
    assert table.loc["D", "training_table"] == "combined_C"
    assert table[["bleu", "chrf"]].notna().all().all()
    assert table.loc["B", "bleu_p_vs_A"] <= 1 and np.isnan(table.loc["B", "bleu_p_vs_B"])


def test_fused_adapter_e_names_both_parents_as_the_lake_recorded_them(materialized):
    lake, result, resources = materialized
    metadata = {name: result.asset_materializations_for_node(name)[0].metadata
                for name in ("adapter_B", "adapter_C", "adapter_E")}
    for parent in ("adapter_B", "adapter_C"):
        recorded = (lake / ".content_hashes" / parent).read_text().strip()
        assert metadata["adapter_E"][f"{parent}_hash"].value == metadata[parent]["content_hash"].value == recorded
    assert (metadata["adapter_E"]["method"].value, metadata["adapter_E"]["weights"].value) == ("linear", [0.5, 0.5])
    tables = {name: table_hash(pd.read_parquet(lake / f"{name}.parquet")) for name in ("train_A", "synth_B")}
    row = pd.read_parquet(lake / "bleu_table.parquet").set_index("system").loc["E"]
    assert (row["adapter"], row["adapter_hash"]) == ("adapter_E", folder_hash(lake / "adapter_E"))
    assert row["training_table"] == "adapter_B:train_A+adapter_C:synth_B"
    assert row["training_table_hash"] == f"{tables['train_A']}+{tables['synth_B']}"
    assert row["base_model"] == resources["base_model"].model_path()
    translated = pd.read_parquet(lake / "translations.parquet")
    assert (translated["system"] == "E").sum() == (translated["system"] == "B").sum() > 0


def test_chart_is_a_real_picture_shown_in_the_ui(materialized):
    lake, result, _ = materialized
    for name in ("bleu.png", "loss.png"):
        pixels = mpimg.imread(lake / "bleu_chart" / name)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400
        assert pixels[..., :3].std() > 0.05, f"{name} is blank"
    metadata = result.asset_materializations_for_node("bleu_chart")[0].metadata
    assert metadata["bleu_chart"].value.startswith("![BLEU per system](data:image/png;base64,")


def test_changing_train_A_changes_adapter_B_lineage_and_nothing_else(materialized, tmp_path):
    lake, _, resources = materialized
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    before = pd.read_parquet(copy / "bleu_table.parquet").set_index("system")
    train = pd.read_parquet(copy / "train_A.parquet")
    changed = train.iloc[:-1]
    changed.to_parquet(copy / "train_A.parquet", index=False)
    resources = {**resources, **graph_resources(copy, resources["base_model"])}
    with dg.instance_for_test() as instance:
        result = dg.materialize(everything(), resources=resources, instance=instance,
                                selection=["adapter_B", "translations", "bleu_table"])
    assert result.success
    after = pd.read_parquet(copy / "bleu_table.parquet").set_index("system")
    assert after.loc["B", "training_table_hash"] == table_hash(changed) != before.loc["B", "training_table_hash"]
    assert after.loc["B", "adapter_hash"] != before.loc["B", "adapter_hash"]
    lineage = ["test_table_hash", "adapter_hash", "training_table_hash", "base_revision"]
    for system in ("A", "C", "D"):
        assert after.loc[system, lineage].to_dict() == before.loc[system, lineage].to_dict(), system
    assert after.loc["B", "test_table_hash"] == before.loc["B", "test_table_hash"]


def test_evaluation_tables_match_their_column_schemas_and_scores_are_plottable(materialized):
    lake, result, _ = materialized
    graph = defs.resolve_asset_graph()
    for name in ("translations", "bleu_table"):
        schema = graph.get(dg.AssetKey(name)).metadata["dagster/column_schema"]
        assert {c.name for c in schema.columns} == set(pd.read_parquet(lake / f"{name}.parquet").columns), name
        assert all(c.description for c in schema.columns), name
    (event,) = result.asset_materializations_for_node("bleu_table")
    table = pd.read_parquet(lake / "bleu_table.parquet").set_index("system")
    for system, row in table.iterrows():  # floats, full precision, one series per system for the Plots tab
        assert event.metadata[f"bleu/{system}"] == dg.MetadataValue.float(float(row["bleu"]))
        assert event.metadata[f"chrf/{system}"] == dg.MetadataValue.float(float(row["chrf"]))
    assert "p_vs_A/A" not in event.metadata
    assert event.metadata["p_vs_A/B"] == dg.MetadataValue.float(float(table.loc["B", "bleu_p_vs_A"]))
