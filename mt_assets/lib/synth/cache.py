"""The teacher's per-request cache: one JSON file per answered request, so reruns resume."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from upath import UPath


class RequestCache:
    """One JSON file per answered request under ``directory``, named by ``request_key``.

    Files are written to a temporary file in the same folder and renamed into place (atomic on
    POSIX and Windows), so a reader never sees half a file. ``directory`` may also be a URL of an
    object store (``s3://bucket/lake/.teacher_cache``), where a cache outlives the machine: an
    object is written whole when its upload ends, so no temporary name is needed there. Each file
    also records the request (identity, seed, messages) and the reply, for auditing. No secrets
    are stored.
    """

    def __init__(self, directory: str | os.PathLike):
        remote = UPath(directory).protocol not in ("", "file", "local")
        self.directory = UPath(directory) if remote else Path(directory)

    @staticmethod
    def request_key(identity: dict, messages: Sequence[dict], seed: int, **extra) -> str:
        """SHA-256 of the request; ``extra`` (translate mode: mode, source, prompt, stop) joins it."""
        canonical = json.dumps({"identity": identity, "messages": [dict(m) for m in messages], "seed": seed,
                                **extra},
                               sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached reply, or None. An unreadable file counts as missing (it is re-requested)."""
        path = self.path(key)
        try:
            with path.open(encoding="utf-8") as handle:
                record = json.load(handle)
            reply = record["reply"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return reply if isinstance(reply, str) else None

    def put(self, key: str, reply: str, record: dict) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({**record, "key": key, "reply": reply}, ensure_ascii=False, indent=1)
        if isinstance(self.directory, UPath):
            path.write_text(payload, encoding="utf-8")
            return path
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.json")) if self.directory.is_dir() else 0
