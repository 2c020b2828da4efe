"""The composition root: every asset, check, resource, job and schedule of mt_assets."""

import dagster as dg

from mt_assets.defs.data import data_assets, data_checks, ood_assets, ood_checks
from mt_assets.defs.evaluation import build_evaluation_assets, evaluation_checks
from mt_assets.defs.fusion import fusion_assets
from mt_assets.defs.profiles import (build_executor, build_resources, load_profile, ood_test_name, profile_tags,
                                     schedule_settings)
from mt_assets.defs.schedules import asset_job, evaluation_job, evaluation_schedule
from mt_assets.defs.synthetic import synthetic_assets_for, synthetic_checks
from mt_assets.defs.training import training_assets, training_checks


def build_definitions(profile: dict) -> dg.Definitions:
    """The same assets for every profile, plus test_ood when it has an ``ood_test`` section; the profile
    gives resources, executor, schedule settings and the tags of every run, and whether synth_B joins
    the `gpu` pool (an in-process teacher)."""
    tags = profile_tags(profile)
    evaluation = evaluation_job(tags)
    ood_name = ood_test_name(profile)
    resources = build_resources(profile)
    return dg.Definitions(
        assets=[*data_assets, *(ood_assets if ood_name else []), *synthetic_assets_for(resources["teacher"]),
                *training_assets, *fusion_assets, *build_evaluation_assets(ood_name)],
        asset_checks=[*data_checks, *(ood_checks if ood_name else []), *synthetic_checks, *training_checks,
                      *evaluation_checks],
        jobs=[asset_job(tags), evaluation],
        schedules=[evaluation_schedule(schedule_settings(profile), evaluation)],
        resources=resources,
        executor=build_executor(profile),
    )


profile = load_profile()
defs = build_definitions(profile)
