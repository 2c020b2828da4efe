"""Content hashes that tie scores to the exact tables and adapters that produced them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd


def table_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of a table's column names, dtypes and row contents, in row order.

    Independent of the file format and library versions that stored the table: the same rows in
    the same order give the same hash.
    """
    digest = hashlib.sha256()
    for name, dtype in frame.dtypes.items():
        digest.update(f"{name}:{dtype}\n".encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def folder_hash(folder: Path) -> str:
    """SHA-256 over every file's relative path and bytes under a folder, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
