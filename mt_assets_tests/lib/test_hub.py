"""Lineage of Hub models and datasets: the commit the Hub served, resolved from a local Hub cache
offline (HF_HUB_OFFLINE=1), as `from_pretrained` and `load_dataset` find their files there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

MAIN, TAGGED = "1" * 40, "2" * 40
CHILD = """
import json
from mt_assets.defs.data import corpus_revision
from mt_assets.defs.models import HubBaseModel
from mt_assets.defs.data import HuggingFaceCorpus
from mt_assets.lib.models.hub import hub_commit

latest = HubBaseModel(name_or_path="org/tiny", device="cpu")
model = latest.load_model()  # loads from the snapshot the commit names
print(json.dumps({"main": latest.reference(), "tagged": HubBaseModel(name_or_path="org/tiny", hub_revision="v1").reference(),
                  "dataset": corpus_revision(HuggingFaceCorpus(dataset="org/corpus", config=None)),
                  "unknown": hub_commit("org/not-cached"), "parameters": sum(p.numel() for p in model.parameters())}))
"""


def hub_cache(cache: Path, kind: str, repo: str, snapshots: dict[str, str], files: Path | None) -> None:
    """The Hub cache's layout: <kind>s--org--name/refs/<ref> holds a commit, snapshots/<commit>/ the files."""
    folder = cache / f"{kind}s--{repo.replace('/', '--')}"
    for ref, commit in snapshots.items():
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
        snapshot = folder / "snapshots" / commit
        if files:
            shutil.copytree(files, snapshot)
        else:
            snapshot.mkdir(parents=True)
            (snapshot / "README.md").write_text("a dataset card")


def test_an_unpinned_hub_model_and_dataset_record_the_commit_served(tmp_path, untrained_tiny_model):
    cache = tmp_path / "hub"
    hub_cache(cache, "model", "org/tiny", {"main": MAIN, "v1": TAGGED}, untrained_tiny_model)
    hub_cache(cache, "dataset", "org/corpus", {"main": MAIN}, None)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["main"] == {"base_model": "org/tiny", "revision": MAIN}  # no revision pinned: main's commit
    assert found["tagged"]["revision"] == TAGGED
    assert found["dataset"] == MAIN
    assert found["unknown"] is None
    assert found["parameters"] > 0
