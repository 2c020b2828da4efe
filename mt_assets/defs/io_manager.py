"""The data lake: Parquet tables and artifact folders on universal-pathlib, written atomically."""


import errno
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from mt_assets.lib.hashing import folder_hash, table_hash
from mt_assets.lib.urls import redact_url

RECORDS = ".content_hashes"
"""A folder asset's content hash is kept beside it, in the hidden file ``.content_hashes/<name>``."""
CONTENT_HASH = "content_hash"
"""The metadata key of an output's content hash (lib.hashing), which is also its data version."""


class LakeError(RuntimeError):
    """A table or folder of the data lake that cannot be written or used; the message names the
    path and what to do."""


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
    half-written table or folder where a downstream asset would read it; a table is read back
    (its Parquet footer's row count) before the rename. Each output records its path, row count
    (tables) and a content hash as metadata; a folder's hash is also kept beside it in the lake
    (``.content_hashes/<key>``), and a folder is loaded only when its files still match it, as a
    local folder (``local_folder``: object-store folders are downloaded once, by hash). On object
    storage a rename copies object by object: a reader in between fails on the hash, never
    reads a mix.
    """

    base_path: str = "data_lake"
    """Setting data_lake. ``~`` and environment variables (``$VAR``, ``${VAR}``) are expanded."""

    def _asset_path(self, context: dg.InputContext | dg.OutputContext) -> UPath:
        path = lake_root(self.base_path).joinpath(*context.asset_key.path)
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
                _check_written(temp, target, len(obj), context.asset_key.to_user_string())
                temp.rename(target)
            except BaseException:
                _remove(temp)  # a failed write leaves the previous table and no debris
                raise
            context.add_output_metadata({
                "path": dg.MetadataValue.path(redact_url(str(target))),
                "dagster/row_count": len(obj),
                CONTENT_HASH: _content_hash(context, obj),
            })
        elif isinstance(obj, Folder):
            content_hash = _content_hash(context, obj)
            _replace_folder(obj.path, path)
            _write_text(_record(path), content_hash)  # a reader checks the folder against it
            if obj.stored:  # last: the adapter is in the lake, its checkpoints may go
                obj.stored()
            context.add_output_metadata({
                "path": dg.MetadataValue.path(redact_url(str(path))),
                CONTENT_HASH: content_hash,
            })
        else:
            raise TypeError(
                f"asset {context.asset_key.to_user_string()} returned {type(obj).__name__}; the data "
                "lake stores pandas DataFrames and Folder artifacts"
            )

    def load_input(self, context: dg.InputContext):
        path = self._asset_path(context)
        table = path.with_name(path.name + ".parquet")
        asset = context.asset_key.to_user_string()
        if table.exists():
            return _read_table(table, asset)
        if path.is_dir():
            return local_folder(path, asset)
        raise FileNotFoundError(
            f"asset {asset} has not been materialized: nothing at {redact_url(str(table))} or "
            f"{redact_url(str(path))}/. Materialize it first"
        )


def _content_hash(context: dg.OutputContext, obj: pd.DataFrame | Folder) -> str:
    """The output's content hash: the one its Output carries (defs.versioning.versioned computed it
    for the data version, before the folder moved), else computed here."""
    given = context.output_metadata.get(CONTENT_HASH)
    if given is not None:
        return str(getattr(given, "value", given))
    return table_hash(obj) if isinstance(obj, pd.DataFrame) else folder_hash(obj.path)


def lake_root(base_path: str) -> UPath:
    """The data lake at setting data_lake, with ``~`` and environment variables expanded; an
    unset variable is an error naming it."""
    expanded = os.path.expandvars(os.path.expanduser(str(base_path)))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if unset:
        raise LakeError(f"setting data_lake {redact_url(str(base_path))!r} names environment variable(s) "
                        f"{sorted(set(unset))} that are not set: export them or write the path out")
    return UPath(expanded)


def _check_written(temp: UPath, target: UPath, rows: int, asset: str) -> None:
    """Read back the Parquet footer of a table just written to `temp`: it must hold `rows` rows."""
    try:
        with temp.open("rb") as handle:
            found = f"{pq.ParquetFile(handle).metadata.num_rows} rows"
    except (OSError, pa.ArrowException) as err:
        found = f"an unreadable file ({type(err).__name__}: {err})"
    if found != f"{rows} rows":
        raise LakeError(
            f"asset {asset}: the table written for {redact_url(str(target))} reads back as {found}, not "
            f"{rows} rows; the previous table was left in place. Check free space and access to the data "
            "lake (setting data_lake), then materialize the asset again"
        )


def _read_table(table: UPath, asset: str) -> pd.DataFrame:
    try:
        with table.open("rb") as handle:
            return pd.read_parquet(handle)
    except (OSError, pa.ArrowException) as err:
        raise LakeError(
            f"asset {asset}: {redact_url(str(table))} is not a readable Parquet table ({type(err).__name__}: "
            f"{err}); it was cut off or changed outside the pipeline. Materialize {asset} again "
            f"(mt-assets materialize --select {asset})"
        ) from err


def _record(folder: UPath) -> UPath:
    return folder.parent / RECORDS / folder.name


def _write_text(path: UPath, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temp.write_text(text)
    temp.rename(path)


def _mismatch(asset: str, folder: UPath, why: str) -> LakeError:
    return LakeError(f"asset {asset} at {redact_url(str(folder))} {why}. Do not use it: materialize {asset} "
                     f"again (mt-assets materialize --select {asset})")


def local_folder(folder: UPath, asset: str, cache_dir: str | None = None) -> Path:
    """A folder asset of the data lake as a local folder, checked against the content hash the IO
    manager recorded when it wrote it (a changed, damaged or half-copied folder is an error).

    A local lake's folder is returned in place. An object-store folder is downloaded once into
    ``<cache_dir or the temp dir>/mt_assets-lake/<asset>-<hash>/`` and reused while its hash holds."""
    record = _record(folder)
    if not record.exists():
        raise _mismatch(asset, folder, f"has no recorded content hash ({redact_url(str(record))} is missing): "
                        "it was not written by the data lake, or its write was cut off")
    recorded = record.read_text().strip()
    if folder.protocol in ("", "file", "local"):
        local = Path(folder.path)
    else:
        local = Path(cache_dir or tempfile.gettempdir()) / "mt_assets-lake" / f"{asset}-{recorded}"
        if not (local.is_dir() and folder_hash(local) == recorded):
            _download(folder, local)
    actual = folder_hash(local)
    if actual != recorded:
        raise _mismatch(asset, folder, f"does not match the content hash recorded when it was materialized "
                        f"({recorded[:12]}..., now {actual[:12]}...): its files were changed, damaged or only "
                        "partly written")
    return local


def adapter_folder(lake: UPath, adapter: str) -> Path:
    """The local folder of `adapter`: a folder path as given, else the adapter asset of that name in
    the data lake, checked against its recorded content hash (as evaluation loads it)."""
    if Path(adapter).is_dir():
        return Path(adapter)
    if (lake / adapter).is_dir():
        return local_folder(lake / adapter, adapter)
    raise LakeError(f"no adapter folder {adapter} and no asset {adapter} in the data lake at {lake}: "
                    f"materialize it first (mt-assets materialize --select {adapter}) or give a folder")


def _download(folder: UPath, local: Path) -> None:
    """Copy an object-store folder to `local` through a hidden temporary folder beside it."""
    local.parent.mkdir(parents=True, exist_ok=True)
    temp = local.with_name(f".{local.name}.{uuid.uuid4().hex}.tmp")
    try:
        folder.fs.get(folder.path.rstrip("/") + "/", str(temp), recursive=True)
        shutil.rmtree(local, ignore_errors=True)  # a damaged copy (a valid one is never replaced)
        try:
            os.rename(temp, local)
        except OSError:
            pass  # another process put its copy there first: checked like ours
    finally:
        shutil.rmtree(temp, ignore_errors=True)


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
            _move(target, previous)
        try:
            _move(staging, target)
        except BaseException:
            if previous.exists() and not target.exists():
                _move(previous, target)
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


def _move(source: UPath, target: UPath) -> None:
    """Rename a file or folder. On object storage a folder is copied object by object, server side
    (fsspec's recursive move trips over the folder's own key), then removed."""
    if source.protocol in ("", "file", "local") or not source.is_dir():
        source.rename(target)
        return
    root = source.path.rstrip("/")
    for key in source.fs.find(root):
        source.fs.copy(key, target.path.rstrip("/") + key[len(root):])
    source.fs.rm(root, recursive=True)


def _remove(path: UPath) -> None:
    """Delete a file or folder if it is there (best effort: cleaning up must not hide the real error)."""
    try:
        if path.exists():
            path.fs.rm(path.path, recursive=True)
    except OSError:
        pass
