"""Every run says which profile it used: `mt_assets/profile` (the name) and `mt_assets/profile_hash`
(a hash of the resolved settings), on runs of the command line, of the UI's jobs and of the schedule."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

from mt_assets import cli
from mt_assets.definitions import build_definitions
from mt_assets.defs.profiles import PROFILE_HASH_TAG, PROFILE_TAG, load_profile, profile_tags
from mt_assets.defs.schedules import ASSET_JOB
from mt_assets_tests.ops_support import write_profile


@pytest.fixture
def profile(tmp_path, untrained_tiny_model):
    return write_profile(tmp_path / "tagged.yaml", tmp_path / "lake", untrained_tiny_model, pretrain_steps=0,
                         executor={"type": "in_process"})


def test_a_cli_run_carries_the_profile_name_and_hash(profile, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert cli.main(["materialize", "--profile", str(profile), "--select", "opus_sample"]) == 0
    [run] = dg.DagsterInstance.get().get_runs()
    expected = profile_tags(load_profile(str(profile)))
    assert run.tags[PROFILE_TAG] == "tagged"
    assert run.tags[PROFILE_HASH_TAG] == expected[PROFILE_HASH_TAG] and len(expected[PROFILE_HASH_TAG]) == 64


def test_the_jobs_the_ui_launches_carry_the_tags(profile):
    defs = build_definitions(load_profile(str(profile)))
    tags = profile_tags(load_profile(str(profile)))
    every_asset = defs.resolve_implicit_global_asset_job_def()  # what Materialize (all) launches
    assert every_asset.name == ASSET_JOB
    assert dict(every_asset.run_tags) == tags
    graph = defs.resolve_asset_graph()
    assert every_asset.asset_layer.selected_asset_keys == graph.get_all_asset_keys()
    assert set(every_asset.asset_layer.asset_graph.asset_check_keys) == set(graph.asset_check_keys)
    assert dict(defs.resolve_job_def("evaluation_job").run_tags) == tags


def test_the_schedules_run_request_carries_the_tags(profile):
    defs = build_definitions(load_profile(str(profile)))
    schedule = defs.resolve_schedule_def("evaluation_schedule")
    with dg.build_schedule_context(scheduled_execution_time=None) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert {key: request.tags[key] for key in (PROFILE_TAG, PROFILE_HASH_TAG)} == \
        profile_tags(load_profile(str(profile)))


def test_the_hash_follows_the_content_not_the_name(profile, tmp_path):
    settings = yaml.safe_load(profile.read_text())
    same = tmp_path / "copy.yaml"
    same.write_text(yaml.safe_dump(settings))
    settings["evaluation"]["max_new_tokens"] = 41
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(settings))
    original, copy, changed = (profile_tags(load_profile(str(p))) for p in (profile, same, edited))
    assert copy[PROFILE_TAG] == "copy" and copy[PROFILE_HASH_TAG] == original[PROFILE_HASH_TAG]
    assert changed[PROFILE_HASH_TAG] != original[PROFILE_HASH_TAG]
    assert profile_tags(load_profile(str(profile))) == original  # the same content, the same hash again
