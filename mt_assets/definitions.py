"""The composition root: every asset, check, resource and schedule of mt_assets."""

import dagster as dg

from mt_assets.defs.data import data_assets, data_checks
from mt_assets.defs.profiles import build_resources, load_profile

profile = load_profile()

defs = dg.Definitions(
    assets=[*data_assets],
    asset_checks=[*data_checks],
    resources=build_resources(profile),
)
