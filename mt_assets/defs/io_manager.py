"""The data lake: Parquet tables and artifact folders on universal-pathlib, written atomically."""


import errno
import os
import shutil
import uuid
from collections.abc import Callable
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
    stored: Callable[[], None] | None = None
    """Called once the folder is in place in the lake: e.g. removing the checkpoints it was trained
    from, which a failed move must leave for the rerun."""


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
            try:
                with temp.open("wb") as handle:
                    obj.to_parquet(handle, index=False)
                temp.rename(target)
            except BaseException:
                _remove(temp)  # a failed write leaves the previous table and no debris
                raise
            context.add_output_metadata({
                "path": dg.MetadataValue.path(str(target)),
                "dagster/row_count": len(obj),
                "content_hash": table_hash(obj),
            })
        elif isinstance(obj, Folder):
            content_hash = folder_hash(obj.path)
            _replace_folder(obj.path, path)
            if obj.stored:
                obj.stored()
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
    """Move a local folder to `target`, replacing what was there, never exposing a partial copy.

    A failure leaves the previous version at `target` and `source` where it was (it may be the
    only copy of hours of training); only a hard kill can leave a hidden ``.<name>.*.tmp`` behind,
    which is never read as the asset."""
    local = target.protocol in ("", "file", "local")
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    moved = False
    try:
        if local:
            try:
                os.rename(source, staging.path)
                moved = True
            except OSError as err:
                if err.errno != errno.EXDEV:
                    raise
                shutil.copytree(source, staging.path)  # another file system: copy, then remove below
        else:
            staging.fs.put(str(source), staging.path, recursive=True)
        previous = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
        if target.exists():
            target.rename(previous)
        try:
            staging.rename(target)
        except BaseException:
            if previous.exists() and not target.exists():
                previous.rename(target)
            raise
    except BaseException:
        if moved:
            os.rename(staging.path, source)
        else:
            _remove(staging)
        raise
    if not moved:
        shutil.rmtree(source)
    _remove(previous)


def _remove(path: UPath) -> None:
    """Delete a file or folder if it is there (best effort: cleaning up must not hide the real error)."""
    try:
        if path.exists():
            path.fs.rm(path.path, recursive=True)
    except OSError:
        pass
