"""The evaluation schedule, and the profile sections that set it and the executor."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

from mt_assets.definitions import build_definitions, defs
from mt_assets.defs.profiles import ProfileError, build_executor, load_profile
from mt_assets.defs.schedules import WEEKLY

EVALUATION = {"translations", "bleu_table", "bleu_chart"}


def test_evaluation_job_reruns_evaluation_and_its_checks_only():
    job = defs.resolve_job_def("evaluation_job")
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} == EVALUATION
    checks = {(key.asset_key.to_user_string(), key.name) for key in job.asset_layer.asset_graph.asset_check_keys}
    assert checks == {("translations", "every_test_pair_translated"), ("bleu_table", "b_beats_a")}


def test_evaluation_schedule_runs_weekly_by_default():
    schedule = defs.resolve_schedule_def("evaluation_schedule")
    assert schedule.cron_schedule == WEEKLY == "0 3 * * 1"
    assert schedule.job_name == "evaluation_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.execution_timezone == "UTC"


def test_schedule_section_of_a_profile(tmp_path):
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump({"extends": "tiny", "schedule": {"cron": "30 1 * * *", "timezone": "Europe/Paris",
                                                                     "running": False}}))
    schedule = build_definitions(load_profile(str(path))).resolve_schedule_def("evaluation_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 1 * * *", "Europe/Paris")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_bad_schedule_section_names_the_setting(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"extends": "tiny", "schedule": {"every": "monday"}}))
    with pytest.raises(ProfileError, match="schedule.every"):
        build_definitions(load_profile(str(path)))
    path.write_text(yaml.safe_dump({"extends": "tiny", "schedule": {"cron": "every monday"}}))
    with pytest.raises(ProfileError, match="schedule.cron"):
        build_definitions(load_profile(str(path)))


@pytest.mark.parametrize(("section", "name"), [
    (None, None), ({"type": "in_process"}, "in_process"), ({"type": "multiprocess", "config": {"max_concurrent": 2}},
                                                         "multiprocess"), ({"type": "k8s"}, "k8s")])
def test_executor_section(section, name):
    profile = {"file": "p.yaml", **({"executor": section} if section else {})}
    executor = build_executor(profile)
    assert (executor.name if executor else None) == name


def test_unknown_executor_names_the_choices():
    with pytest.raises(ProfileError, match=r"executor.type 'ray' is not one of \['in_process', 'k8s', 'multiprocess'\]"):
        build_executor({"file": "p.yaml", "executor": {"type": "ray"}})


def test_extends_merges_sections_and_replaces_a_section_whose_type_changes(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"extends": "paper", "training": {"epochs": 3}}))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({
        "extends": "base.yaml", "training": {"r": 8},
        "base_model": {"type": "tiny", "corpus_path": "{package_data}/demo_corpus.tsv"}}))
    profile = load_profile(str(tmp_path / "child.yaml"))
    paper = load_profile("paper")
    assert profile["training"] == {**paper["training"], "epochs": 3, "r": 8}
    assert profile["base_model"]["type"] == "tiny" and "name_or_path" not in profile["base_model"]
    assert profile["base_model"]["corpus_path"].endswith("mt_assets/data/demo_corpus.tsv")
    assert profile["teacher"] == paper["teacher"] and profile["name"] == "child"


def test_extends_in_a_circle_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ProfileError, match="goes round in a circle"):
        load_profile(str(tmp_path / "a.yaml"))
