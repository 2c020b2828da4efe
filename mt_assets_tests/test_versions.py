"""Code and data versions: the staleness the UI shows (its GraphQL `staleStatus`), after upstream changes.

The data and synthetic assets are materialized on the demo corpus with the oracle teacher (no model),
then rebuilt in different ways; a code server loads the definitions as `dagster dev` does.
"""

from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql.test.utils import define_out_of_process_workspace, execute_dagster_graphql

from mt_assets.definitions import defs
from mt_assets.defs.data import data_assets
from mt_assets.defs.data import Experiment
from mt_assets.defs.synthetic import Synthesis, synthetic_assets
from mt_assets.lib.hashing import table_hash
from mt_assets_tests.e2e_support import graph_resources, tiny_base

STALENESS = "query { assetNodes { assetKey { path } staleStatus staleCauses { key { path } category reason } } }"
ASSETS = [*data_assets, *synthetic_assets]
LOCATION = """
import dagster as dg
from mt_assets.defs.data import data_assets
from mt_assets.defs.profiles import build_resources, load_profile
from mt_assets.defs.synthetic import synthetic_assets

BUMPED = {bumped!r}
defs = dg.Definitions(assets=dg.map_asset_specs(
    lambda spec: spec.replace_attributes(code_version="2") if spec.key.to_user_string() in BUMPED else spec,
    [*data_assets, *synthetic_assets]), resources=build_resources(load_profile("tiny")))
"""


def test_every_asset_has_a_code_version():
    graph = defs.resolve_asset_graph()
    missing = [key.to_user_string() for key in graph.get_all_asset_keys() if not graph.get(key).code_version]
    assert missing == []


def resources(lake: Path, **changed) -> dict:
    every = {**graph_resources(lake, tiny_base(lake / "unused_model", 1)), **changed}
    return {key: every[key] for key in ("io_manager", "experiment", "corpus", "teacher", "synthesis")}


def stale(workspace) -> dict[str, tuple[str, set]]:
    """Asset -> (staleStatus, {(cause asset, category)}), for the assets materialized so far."""
    nodes = execute_dagster_graphql(workspace.create_request_context(), STALENESS).data["assetNodes"]
    return {node["assetKey"]["path"][0]: (node["staleStatus"], {(c["key"]["path"][0], c["category"])
                                                                  for c in node["staleCauses"]})
            for node in nodes if node["staleStatus"] != "MISSING"}


@pytest.fixture
def location(tmp_path):
    def write(*bumped: str) -> str:
        path = tmp_path / f"location_{len(bumped)}.py"
        path.write_text(LOCATION.format(bumped=set(bumped)))
        return str(path)

    return write


def test_exactly_the_assets_below_a_changed_table_are_stale(tmp_path, instance, location):
    lake = tmp_path / "lake"
    first = dg.materialize(ASSETS, instance=instance, resources=resources(lake))
    assert first.success
    sample = first.asset_materializations_for_node("opus_sample")[0]
    assert sample.tags["dagster/data_version"] == table_hash(first.output_for_node("opus_sample"))
    with define_out_of_process_workspace(location(), "defs", instance) as workspace:
        fresh = {name: ("FRESH", set()) for name in ("opus_sample", "train_A", "test_A", "synth_B", "combined_C")}
        assert stale(workspace) == fresh

        # the same sample again (same corpus, seed, size): same content, so nothing below it is stale
        assert dg.materialize(ASSETS, selection=["opus_sample"], instance=instance, resources=resources(lake)).success
        assert stale(workspace) == fresh

        # a smaller synth_B: combined_C, built from the old one, is stale, and nothing else
        smaller = Synthesis(cache_dir=str(lake / ".teacher_cache"), size_factor=1.0)
        assert dg.materialize(ASSETS, selection=["synth_B"], instance=instance,
                              resources=resources(lake, synthesis=smaller)).success
        assert stale(workspace) == {**fresh, "combined_C": ("STALE", {("synth_B", "DATA")})}

        # another seed: a new sample, so the split built from the old one is stale
        reseeded = Experiment(sample_size=60, seed=7, test_fraction=0.2)
        assert dg.materialize(ASSETS, selection=["opus_sample"], instance=instance,
                              resources=resources(lake, experiment=reseeded)).success
        now = stale(workspace)
        assert now["train_A"] == now["test_A"] == ("STALE", {("opus_sample", "DATA")})
        assert now["opus_sample"] == now["synth_B"] == ("FRESH", set())

    # everything rebuilt as it was, then a new code version of the split: train_A and test_A are stale
    assert dg.materialize(ASSETS, instance=instance, resources=resources(lake)).success
    with define_out_of_process_workspace(location("train_A", "test_A"), "defs", instance) as workspace:
        assert stale(workspace) == {**fresh, "train_A": ("STALE", {("train_A", "CODE")}),
                                    "test_A": ("STALE", {("test_A", "CODE")})}
