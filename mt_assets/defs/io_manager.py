"""The data lake: Parquet tables and artifact folders on universal-pathlib, written atomically."""


import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
from upath import UPath

from mt_assets.lib.hashing import folder_hash, table_hash


@dataclass(frozen=True)
class Folder:
    """A local folder an asset produced (an adapter, a chart set). The IO manager moves it into the
    data lake whole (local lake) or uploads it and removes the local copy (object storage)."""

    path: Path


class DataLakeIOManager(dg.ConfigurableIOManager):
    """Stores each asset under `base_path` by its key: a DataFrame as `<key>.parquet`, a `Folder`
    as `<key>/`. `base_path` is a local folder or an fsspec URL (`s3://bucket/lake`,
    `gs://bucket/lake`; credentials come from the usual environment variables).

    Writes go to a temporary name first and are renamed into place, so a crash never leaves a
    half-written table or folder where a downstream asset would read it. Each output records its
    path, row count (tables) and a content hash as metadata.
    """

    base_path: str = "data_lake"

    def _asset_path(self, context: dg.InputContext | dg.OutputContext) -> UPath:
        path = UPath(self.base_path).joinpath(*context.asset_key.path)
        if context.has_partition_key:
            path = path / context.partition_key
        return path

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        path = self._asset_path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, pd.DataFrame):
            target = path.with_name(path.name + ".parquet")
            temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.parquet.tmp")
            with temp.open("wb") as handle:
                obj.to_parquet(handle, index=False)
            temp.rename(target)
            context.add_output_metadata({
                "path": dg.MetadataValue.path(str(target)),
                "dagster/row_count": len(obj),
                "content_hash": table_hash(obj),
            })
        elif isinstance(obj, Folder):
            content_hash = folder_hash(obj.path)
            _replace_folder(obj.path, path)
            context.add_output_metadata({
                "path": dg.MetadataValue.path(str(path)),
                "content_hash": content_hash,
            })
        else:
            raise TypeError(
                f"asset {context.asset_key.to_user_string()} returned {type(obj).__name__}; the data "
                "lake stores pandas DataFrames and Folder artifacts"
            )

    def load_input(self, context: dg.InputContext):
        path = self._asset_path(context)
        table = path.with_name(path.name + ".parquet")
        if table.exists():
            with table.open("rb") as handle:
                return pd.read_parquet(handle)
        if path.is_dir():
            return path
        raise FileNotFoundError(
            f"asset {context.asset_key.to_user_string()} has not been materialized: nothing at "
            f"{table} or {path}/. Materialize it first"
        )


def _replace_folder(source: Path, target: UPath) -> None:
    """Move a local folder to `target`, replacing what was there, never exposing a partial copy."""
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    if target.protocol in ("", "file", "local"):
        shutil.move(source, staging.path)
    else:
        staging.fs.put(str(source), staging.path, recursive=True)
        shutil.rmtree(source)
    previous = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    if previous.exists():
        previous.fs.rm(previous.path, recursive=True)
