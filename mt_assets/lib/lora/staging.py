"""Where an adapter trains before it enters the data lake: one locked work folder per piece of work.

A work folder is named by the adapter and by what it trains: the hashes of the training table, the
recipe and the base model's identity. A rerun of the same work finds the folder and resumes from its
checkpoints; runs of different work (another table, another data lake's train_A) never share one. A
lock file beside the folder makes two runs of the same work take turns. Inside:

    table.parquet, recipe.json    what the trainer reads (staged once, under the lock)
    checkpoints/                  the Trainer's checkpoints, kept until the adapter is in the lake
    adapter-<run id>/             the adapter one run wrote; the data lake takes it from here
    adapter-<run id>.run.json     that run's own facts (wall time, the checkpoint it resumed)

The work folders live under `.staging/` inside a local data lake, so two profiles that differ in
`data_lake` never meet. With the lake on object storage (`s3://...`) the trainer still needs a local
disk: the default is then a folder of the system's temporary directory named by the lake's URL, and
the checkpoints are copied to the lake as they are written (`checkpoint_mirror`), so a run on another
machine (a restarted pod) resumes from them.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from upath import UPath

STAGING_DIR = ".staging"
LOCAL_PROTOCOLS = ("", "file", "local")


def lake_is_local(data_lake: str) -> bool:
    return UPath(data_lake).protocol in LOCAL_PROTOCOLS


def staging_root(staging_dir: str | None, data_lake: str) -> Path:
    """`staging_dir` when set; else `.staging/` in a local data lake, or for a lake on object storage
    `<temp dir>/mt_assets-staging/<hash of the lake URL>`."""
    if staging_dir:
        return Path(staging_dir).expanduser()
    if lake_is_local(data_lake):
        return Path(UPath(data_lake).path) / STAGING_DIR
    lake_id = hashlib.sha256(str(UPath(data_lake)).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "mt_assets-staging" / lake_id


def checkpoint_mirror(data_lake: str, work: WorkFolder) -> str | None:
    """Where a work folder's checkpoints are copied: none in a local lake (the work folder is in it
    or beside it on the same machine), `<lake>/.staging/<work>/checkpoints` on object storage."""
    if lake_is_local(data_lake):
        return None
    return str(UPath(data_lake) / STAGING_DIR / work.folder.name / "checkpoints")


def work_key(table_hash: str, recipe: dict, base_model: dict) -> str:
    """16 hex digits of SHA-256 over what a training run trains."""
    payload = json.dumps({"table": table_hash, "recipe": recipe, "base_model": base_model}, sort_keys=True,
                         default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class WorkFolder:
    folder: Path

    @classmethod
    def for_work(cls, root: Path, name: str, table_hash: str, recipe: dict, base_model: dict) -> WorkFolder:
        return cls(root / f"{name}-{work_key(table_hash, recipe, base_model)}")

    @property
    def table(self) -> Path:
        return self.folder / "table.parquet"

    @property
    def recipe(self) -> Path:
        return self.folder / "recipe.json"

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    def adapter(self, run_id: str) -> Path:
        return self.folder / f"adapter-{run_id}"

    def run_report(self, run_id: str) -> Path:
        return self.folder / f"adapter-{run_id}.run.json"

    @property
    def lock_file(self) -> Path:
        return self.folder.with_name(f"{self.folder.name}.lock")

    @contextmanager
    def locked(self, waiting: Callable[[str], None]) -> Iterator[None]:
        """Hold the work folder's lock; when another run holds it, say so through `waiting` and wait."""
        handle = self._lock(blocking=False)
        if handle is None:
            waiting(f"waiting for the staging folder {self.folder}: another run is training the same table, "
                    "recipe and base model there (it is locked by that run); this run continues when it ends")
            handle = self._lock(blocking=True)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            yield
        finally:
            handle.close()

    def remove_if_unused(self) -> bool:
        """Remove the work folder and its lock file unless a run holds the lock (it still needs the
        checkpoints; it removes them itself when its adapter is in the lake). True when removed."""
        handle = self._lock(blocking=False)
        if handle is None:
            return False
        try:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.lock_file.unlink(missing_ok=True)  # while locked: a run that opened it retries (see _lock)
        finally:
            handle.close()
        return True

    def _lock(self, blocking: bool):
        """The lock file, open and locked; None when another run holds it and `blocking` is false.
        A lock file removed while this run waited for it is opened again."""
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.lock_file, "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError as err:
                handle.close()
                if err.errno in (errno.EAGAIN, errno.EACCES):
                    return None
                raise
            try:
                if os.fstat(handle.fileno()).st_ino == os.stat(self.lock_file).st_ino:
                    return handle
            except FileNotFoundError:
                pass
            handle.close()
