"""The composition root: every asset, check, resource and schedule of mt_assets."""

import dagster as dg

from mt_assets.defs.data import data_assets, data_checks
from mt_assets.defs.evaluation import evaluation_assets, evaluation_checks
from mt_assets.defs.profiles import build_resources, load_profile
from mt_assets.defs.synthetic import synthetic_assets, synthetic_checks
from mt_assets.defs.training import training_assets, training_checks

profile = load_profile()

defs = dg.Definitions(
    assets=[*data_assets, *synthetic_assets, *training_assets, *evaluation_assets],
    asset_checks=[*data_checks, *synthetic_checks, *training_checks, *evaluation_checks],
    resources=build_resources(profile),
)
