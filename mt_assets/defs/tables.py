"""The pair table as a Dagster type and column schema, from the one pandera schema in lib/."""


import warnings

import dagster as dg
import pandas as pd
from dagster_pandera import pandera_schema_to_dagster_type

from mt_assets.lib.pairs import PairSchema

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)  # stable in practice; pinned in pyproject
    PairTable = pandera_schema_to_dagster_type(PairSchema)
PAIR_TABLE_METADATA = {"dagster/column_schema": PairTable.metadata["schema"].schema}


def preview(frame: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    """A few rows as Markdown for the asset's page in the UI."""
    columns = [c for c in ("pair_id", "source", "target", "origin", "topic") if c in frame]
    return dg.MetadataValue.md(frame.head(rows)[columns].to_markdown(index=False))
