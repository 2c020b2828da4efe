"""Tier 1: the definitions load, with every expected asset, check and resource."""

import dagster as dg

from mt_assets.definitions import defs

DATA_ASSETS = {"opus_sample", "train_A", "test_A"}
DATA_CHECKS = {
    ("opus_sample", "no_blank_text"), ("opus_sample", "no_duplicate_pairs"),
    ("opus_sample", "source_differs_from_target"), ("opus_sample", "sample_size_reached"),
    ("train_A", "no_blank_text"), ("train_A", "no_duplicate_pairs"), ("train_A", "source_differs_from_target"),
    ("test_A", "no_blank_text"), ("test_A", "no_duplicate_pairs"), ("test_A", "source_differs_from_target"),
    ("test_A", "no_test_pair_in_train"),
}


def test_every_data_asset_is_defined():
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert DATA_ASSETS <= keys


def test_every_data_check_is_defined():
    checks = {(key.asset_key.to_user_string(), key.name) for key in defs.resolve_asset_graph().asset_check_keys}
    assert DATA_CHECKS <= checks


def test_overlap_check_is_blocking():
    graph = defs.resolve_asset_graph()
    key = dg.AssetCheckKey(dg.AssetKey("test_A"), "no_test_pair_in_train")
    assert graph.get_check_spec(key).blocking


def test_resources_are_configured():
    assert {"io_manager", "experiment", "corpus"} <= set(defs.resources)


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
