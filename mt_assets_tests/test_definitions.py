"""Tier 1: the definitions load, with every expected asset, check and resource."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mt_assets.definitions import defs

DATA_ASSETS = {"opus_sample", "train_A", "test_A"}
ASSET_GROUPS = {
    "opus_sample": "data", "train_A": "data", "test_A": "data", "synth_B": "synthetic", "combined_C": "synthetic",
    "adapter_B": "training", "adapter_C": "training", "adapter_D": "training", "adapter_E": "training",
    "translations": "evaluation", "bleu_table": "evaluation", "bleu_chart": "evaluation",
}
GPU_ASSETS = {"adapter_B", "adapter_C", "adapter_D", "adapter_E", "translations"}
DATA_CHECKS = {
    ("opus_sample", "no_blank_text"), ("opus_sample", "no_duplicate_pairs"),
    ("opus_sample", "source_differs_from_target"), ("opus_sample", "sample_size_reached"),
    ("train_A", "no_blank_text"), ("train_A", "no_duplicate_pairs"), ("train_A", "source_differs_from_target"),
    ("test_A", "no_blank_text"), ("test_A", "no_duplicate_pairs"), ("test_A", "source_differs_from_target"),
    ("test_A", "no_test_pair_in_train"),
}
OTHER_CHECKS = {
    ("synth_B", "no_test_contamination"), ("synth_B", "synth_size_reached"), ("synth_B", "no_blank_text"),
    ("synth_B", "no_duplicate_pairs"), ("synth_B", "source_differs_from_target"),
    ("combined_C", "combined_sizes_and_origins"), ("combined_C", "no_blank_text"),
    ("combined_C", "no_duplicate_pairs"), ("combined_C", "source_differs_from_target"),
    ("adapter_B", "training_loss_decreased"), ("adapter_C", "training_loss_decreased"),
    ("adapter_D", "training_loss_decreased"), ("translations", "every_test_pair_translated"),
    ("bleu_table", "b_beats_a"),
}


def test_every_asset_is_defined_in_its_group():
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == set(ASSET_GROUPS)
    for name, group in ASSET_GROUPS.items():
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == group, name
        assert node.description, name
        assert node.kinds, name


def test_every_check_is_defined():
    checks = {(key.asset_key.to_user_string(), key.name) for key in defs.resolve_asset_graph().asset_check_keys}
    assert checks == DATA_CHECKS | OTHER_CHECKS


def test_integrity_checks_are_blocking_and_quality_checks_are_not():
    graph = defs.resolve_asset_graph()
    blocking = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert blocking == {("test_A", "no_test_pair_in_train"), ("synth_B", "no_test_contamination")}


def test_gpu_assets_share_the_gpu_pool():
    graph = defs.resolve_asset_graph()
    pools = {name: graph.get(dg.AssetKey(name)).pools for name in ASSET_GROUPS}
    assert {name for name, names in pools.items() if "gpu" in (names or set())} == GPU_ASSETS


def test_lineage_edges():
    graph = defs.resolve_asset_graph()
    parents = {name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys} for name in ASSET_GROUPS}
    assert parents["adapter_B"] == {"train_A"}
    assert parents["adapter_C"] == {"synth_B"}
    assert parents["adapter_D"] == {"combined_C"}
    assert parents["adapter_E"] == {"adapter_B", "adapter_C"}
    assert parents["translations"] == {"test_A", "train_A", "adapter_B", "adapter_C", "adapter_D", "adapter_E"}
    assert parents["synth_B"] == {"train_A", "test_A"}


def test_adapter_e_never_reads_test_A_and_nothing_upstream_chooses_by_it():
    """adapter_E reads its two parents only. Upstream, test_A is read by synth_B alone, and only to
    keep test pairs out of the synthetic data (no_test_contamination): no setting of E, B or C is
    chosen by test_A."""
    graph = defs.resolve_asset_graph()
    parents = lambda key: graph.get(key).parent_keys  # noqa: E731
    upstream, frontier = set(), {dg.AssetKey("adapter_E")}
    while frontier:
        frontier = {parent for key in frontier for parent in parents(key)} - upstream
        upstream |= frontier
    assert dg.AssetKey("test_A") not in parents(dg.AssetKey("adapter_E"))
    assert {"adapter_B", "adapter_C", "train_A", "synth_B"} <= {k.to_user_string() for k in upstream}
    readers = {key.to_user_string() for key in upstream if dg.AssetKey("test_A") in parents(key)}
    assert readers == {"synth_B"}


def test_resources_are_configured():
    assert {"io_manager", "experiment", "corpus", "base_model", "teacher", "synthesis", "training",
            "fusion", "evaluation"} <= set(defs.resources)


def test_data_assets_carry_groups_descriptions_kinds_and_column_schemas():
    graph = defs.resolve_asset_graph()
    for name in DATA_ASSETS:
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == "data"
        assert node.description
        assert "parquet" in node.kinds
        schema = node.metadata["dagster/column_schema"]
        assert {"pair_id", "source", "target", "source_lang", "target_lang", "origin"} <= {
            column.name for column in schema.columns
        }


def test_training_resource_takes_every_recipe_field_with_its_default_and_rule():
    from dataclasses import asdict

    import pydantic

    from mt_assets.defs.training import Training
    from mt_assets.lib.lora.recipe import LoraRecipe

    defaults = asdict(LoraRecipe())
    assert {name: Training.model_fields[name].default for name in defaults} == defaults
    assert Training().recipe() == LoraRecipe()
    recipe = Training(r=8, learning_rate=0.5, target_modules=["all-linear"]).recipe()
    assert (recipe.r, recipe.learning_rate, recipe.target_modules) == (8, 0.5, "all-linear")
    # the recipe's allowed values and bounds are the resource's config rules
    for setting, message in (({"loss_impl": "liger"}, "'auto', 'fused' or 'compact'"),
                             ({"kernels": "flash"}, "'fast' or 'eager'"), ({"seed": -1}, "greater than or equal to 0")):
        with pytest.raises(pydantic.ValidationError, match=message):
            Training(**setting)


def test_unknown_loss_impl_in_a_profile_is_refused_naming_the_setting(tmp_path):
    from mt_assets.defs.profiles import ProfileError, build_resources, load_profile

    path = tmp_path / "mine.yaml"
    path.write_text("extends: demo\ntraining: {loss_impl: liger}\n")
    with pytest.raises(ProfileError, match=r"training\.loss_impl: Input should be 'auto', 'fused' or 'compact'"):
        build_resources(load_profile(str(path)))


def test_dg_check_defs_passes_on_the_project(tmp_path):
    """The dg CLI's own check of the project (pyproject's [tool.dg]) loads every definition."""
    venv = Path(sys.executable).parent
    env = {**os.environ, "VIRTUAL_ENV": str(venv.parent), "MT_ASSETS_PROFILE": "tiny", "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run([str(venv / "dg"), "check", "defs"], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully" in done.stdout + done.stderr


@pytest.mark.parametrize("section, expected", [
    ("", "FusionRecipe(method='linear', weights=[0.5, 0.5], density=0.5, seed=0)"),
    ("  method: dare_ties\n  weights: [0.3, 0.9]\n  density: 0.4\n  seed: 7\n",
     "FusionRecipe(method='dare_ties', weights=[0.3, 0.9], density=0.4, seed=7)"),
    ("  method: svd\n", "fusion.method: Input should be 'linear', 'ties', 'dare_ties' or 'cat'"),
    ("  weights: [1.0, 2.0, 3.0]\n", "fusion.weights: List should have at most 2 items"),
    ("  density: 0\n", "fusion.density: Input should be greater than 0"),
    ("  wieghts: [1, 1]\n", "unknown setting(s) fusion.wieghts (did you mean 'weights'?)"),
])
def test_fusion_settings_come_from_the_profile_section_and_are_checked(tmp_path, section, expected):
    from mt_assets.defs.profiles import ProfileError, build_resources, load_profile

    profile = tmp_path / "fused.yaml"
    profile.write_text(f"extends: tiny\nfusion:\n{section}" if section else "extends: tiny\n")
    try:
        built = repr(build_resources(load_profile(str(profile)))["fusion"].recipe())
    except ProfileError as err:
        built = str(err)
    assert expected in built
