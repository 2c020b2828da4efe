"""Code and data versions, so the UI marks exactly the assets that an upstream change made stale.

Every asset declares a `code_version`: bump it when what the asset computes changes. Every asset
records a data version that is the content hash of what it produced (a table's rows, a folder's
files: lib.hashing). Dagster marks an asset stale when its code version changed or when an
upstream asset's data version is not the one it was built from. So rebuilding an upstream asset
to the same content (same corpus, seed and settings) marks nothing stale, while a changed table
marks the assets that read it, and what depends on those, and nothing else.
"""

import warnings

import dagster as dg
import pandas as pd

from mt_assets.defs.io_manager import CONTENT_HASH, Folder
from mt_assets.lib.hashing import folder_hash, table_hash


def content_version(value: pd.DataFrame | Folder) -> dg.DataVersion:
    if isinstance(value, pd.DataFrame):
        return dg.DataVersion(table_hash(value))
    if isinstance(value, Folder):
        return dg.DataVersion(folder_hash(value.path))
    raise TypeError(f"no content version for {type(value).__name__}: assets return DataFrames or Folders")


def versioned(value: pd.DataFrame | Folder, output_name: str = "result", metadata: dict | None = None) -> dg.Output:
    """`value` as an Output whose data version is its content hash. The hash also goes to the IO
    manager as the output's `content_hash` metadata: it records that one rather than hashing again."""
    version = content_version(value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # data versions: stable in practice; pinned in pyproject
        return dg.Output(value, output_name=output_name, data_version=version,
                         metadata={**(metadata or {}), CONTENT_HASH: version.value})
