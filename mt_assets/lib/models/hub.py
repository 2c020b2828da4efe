"""The commit the Hugging Face Hub serves for a model or dataset, for lineage: a branch or tag
(or no revision at all: the default branch) moves, a commit does not."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=None)
def hub_commit(repo_id: str, revision: str | None = None, repo_type: str = "model") -> str | None:
    """The commit that `revision` (None: the default branch) of a Hub repository resolves to, as the
    Hub answers it, or offline (HF_HUB_OFFLINE=1) as the local Hub cache recorded it when the files
    were downloaded. None for a local folder, or when neither knows the repository (loading it
    fails then too, with its own error). Downloads nothing. Cached for the process: one run loads
    and records one commit."""
    from huggingface_hub import snapshot_download

    if Path(repo_id).expanduser().exists() or repo_id.startswith((".", "/", "~")):
        return None
    try:
        snapshot = snapshot_download(repo_id, repo_type=repo_type, revision=revision,
                                     allow_patterns=["a pattern that matches no file"])
    except (OSError, ValueError):  # not on the Hub, not in the cache offline, an invalid id
        return None
    return Path(snapshot).name
