"""End to end on an object-store data lake: the whole graph on the tiny model with the lake at
``s3://...``, against moto's S3 server running on loopback (credentials are dummies, the endpoint
comes from AWS_ENDPOINT_URL). Staging, the teacher cache and the base model stay local."""

from __future__ import annotations

import io
import logging
import shutil
import socket
import tempfile

import dagster as dg
import pandas as pd
import pytest

from mt_assets.defs.data import data_checks
from mt_assets.defs.evaluation import evaluation_assets, evaluation_checks
from mt_assets.defs.io_manager import DataLakeIOManager
from mt_assets.defs.synthetic import synthetic_checks
from mt_assets.defs.training import training_checks
from mt_assets_tests.fault_support import ASSETS, run_resources
from mt_assets_tests.test_faults import failure_text, model_dir  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e

BUCKET = "mt-lake"
LAKE = f"s3://{BUCKET}/experiments/lake"
GRAPH = [*ASSETS, *evaluation_assets, *data_checks, *synthetic_checks, *training_checks, *evaluation_checks]
FOLDERS = ["adapter_B", "adapter_C", "adapter_D", "adapter_E", "bleu_chart"]
TABLES = ["opus_sample", "train_A", "test_A", "synth_B", "combined_C", "translations", "bleu_table"]


@pytest.fixture
def s3(monkeypatch, tmp_path):
    """An empty bucket on a moto S3 server on 127.0.0.1; the s3fs file system that reaches it."""
    from moto.server import ThreadedMotoServer
    import s3fs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    try:
        yield fs
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def lake_keys(fs) -> list[str]:
    return [key[len(LAKE) - len("s3://"):].lstrip("/") for key in fs.find(LAKE)]


def read_table(fs, name: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(fs.cat(f"{LAKE}/{name}.parquet")))


def test_the_whole_graph_runs_on_an_object_store_lake(s3, model_dir, tmp_path, instance, monkeypatch):  # noqa: F811
    local, scratch, work = tmp_path / "local", tmp_path / "tmp", tmp_path / "work"
    for folder in (local, scratch, work):
        folder.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where folders are staged for reading
    resources = {**run_resources({"lake": str(local), "model_dir": str(model_dir)}),
                 "io_manager": DataLakeIOManager(base_path=LAKE)}
    result = dg.materialize(GRAPH, resources=resources, instance=instance, raise_on_error=False)
    assert result.success, failure_text(result)

    keys = lake_keys(s3)
    assert {f"{t}.parquet" for t in TABLES} <= set(keys)
    for folder in FOLDERS:
        assert any(k.startswith(f"{folder}/") for k in keys), f"{folder} uploaded"
        assert f".content_hashes/{folder}" in keys
    assert {"adapter_B/adapter_model.safetensors", "adapter_B/adapter_config.json", "bleu_chart/bleu.png",
            "bleu_chart/loss.png"} <= set(keys)
    assert not [k for k in keys if k.endswith((".tmp", ".old")) or ".tmp/" in k or ".old/" in k], "no debris"
    assert list(work.iterdir()) == [], "nothing was written relative to the working directory"

    bleu = read_table(s3, "bleu_table").set_index("system")
    assert list(bleu.index) == ["A", "A_fewshot", "B", "C", "D", "E"]
    recorded = {f: s3.cat(f"{LAKE}/.content_hashes/{f}").decode() for f in FOLDERS}
    for system in "BCDE":
        assert bleu.loc[system, "adapter_hash"] == recorded[f"adapter_{system}"], "lineage names the stored adapter"
        staged = scratch / "mt_assets-lake" / f"adapter_{system}-{recorded[f'adapter_{system}']}"
        assert (staged / "adapter_model.safetensors").is_file(), "read from a local copy keyed by its hash"
    checks = {e.asset_check_key.name for e in result.get_asset_check_evaluations() if e.asset_key.path == ["adapter_B"]}
    assert "training_loss_decreased" in checks, "the loss check read the adapter from the object store"
    (event,) = result.asset_materializations_for_node("adapter_B")
    assert event.metadata["path"].value == f"{LAKE}/adapter_B"

    # A damaged object is caught once the local copy is gone: evaluation fails naming the adapter.
    translations = read_table(s3, "translations")
    s3.pipe(f"{LAKE}/adapter_C/adapter_model.safetensors", b"\0" * 1024)
    for staged in (scratch / "mt_assets-lake").iterdir():
        if staged.name.startswith("adapter_C-"):
            shutil.rmtree(staged)
    again = dg.materialize(GRAPH, resources=resources, instance=instance, selection=["translations"],
                           raise_on_error=False)
    assert not again.success
    assert f"asset adapter_C at {LAKE}/adapter_C does not match the content hash recorded" in failure_text(again)
    assert read_table(s3, "translations").equals(translations), "the last good translations stay"
