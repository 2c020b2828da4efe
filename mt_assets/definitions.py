"""The composition root: every asset, check, resource, job and schedule of mt_assets."""

import dagster as dg

from mt_assets.defs.data import data_assets, data_checks
from mt_assets.defs.evaluation import evaluation_assets, evaluation_checks
from mt_assets.defs.profiles import build_executor, build_resources, load_profile, profile_tags, schedule_settings
from mt_assets.defs.schedules import asset_job, evaluation_job, evaluation_schedule
from mt_assets.defs.synthetic import synthetic_assets_for, synthetic_checks
from mt_assets.defs.training import training_assets, training_checks


def build_definitions(profile: dict) -> dg.Definitions:
    """The same assets for every profile; the profile gives resources, executor, schedule settings and
    the tags of every run, and whether synth_B joins the `gpu` pool (an in-process teacher)."""
    tags = profile_tags(profile)
    evaluation = evaluation_job(tags)
    resources = build_resources(profile)
    return dg.Definitions(
        assets=[*data_assets, *synthetic_assets_for(resources["teacher"]), *training_assets, *evaluation_assets],
        asset_checks=[*data_checks, *synthetic_checks, *training_checks, *evaluation_checks],
        jobs=[asset_job(tags), evaluation],
        schedules=[evaluation_schedule(schedule_settings(profile), evaluation)],
        resources=resources,
        executor=build_executor(profile),
    )


profile = load_profile()
defs = build_definitions(profile)
