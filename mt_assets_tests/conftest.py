"""Shared fixtures: the shared corpora folder, temporary data lakes and Dagster instances."""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import pytest

from mt_assets.defs.io_manager import DataLakeIOManager
from mt_assets.defs.profiles import shared_data_dir
from mt_assets.defs.data import Experiment


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $MT_ASSETS_SHARED_DATA); tests that need it skip when it is absent."""
    folder = shared_data_dir()
    if not (folder / "multi30k").is_dir():
        pytest.skip(f"shared corpora not found at {folder}: set MT_ASSETS_SHARED_DATA to the folder "
                    "holding multi30k/ and tatoeba-deu-fra/")
    return folder


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    path = tmp_path / "lake"
    path.mkdir()
    return path


def data_resources(lake: Path, corpus, **experiment) -> dict:
    """Resources for the data assets: a data lake in `lake`, a corpus, experiment settings."""
    settings = {"sample_size": 40, "seed": 7, "test_fraction": 0.25, **experiment}
    return {"io_manager": DataLakeIOManager(base_path=str(lake)), "experiment": Experiment(**settings),
            "corpus": corpus}


SUMMARY_LINES = pytest.StashKey[list]()
"""Lines a test module asks to show at the end of the run (the fault suite's summary)."""


def pytest_terminal_summary(terminalreporter, config):
    for line in config.stash.get(SUMMARY_LINES, []):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def ledger(request):
    """The fault suite's ledger, one for the whole session, so every fault module (test_faults*.py)
    counts into the one summary line, written when the session ends."""
    from mt_assets_tests.fault_support import Ledger

    faults = Ledger()
    yield faults
    line = faults.summary()
    request.config.stash.setdefault(SUMMARY_LINES, []).append(line)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line, file=sys.__stdout__, flush=True)
        return
    with capture.global_and_fixture_disabled():  # past pytest's output capture, onto the terminal
        reporter.write(f"\n{line}\n")


@pytest.fixture(scope="session")
def untrained_tiny_model(tmp_path_factory) -> Path:
    """The tiny base model with its tokenizer but no pretraining: for tests of plumbing (processes,
    the command line, the UI), not of learning. Built once per session, by the resource."""
    from mt_assets_tests.e2e_support import tiny_base

    folder = tmp_path_factory.mktemp("untrained") / "model"
    tiny_base(folder, pretrain_steps=0).model_path()
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny base model, built once per test session by the TinyBaseModel resource itself."""
    from mt_assets_tests.e2e_support import tiny_base

    folder = tmp_path_factory.mktemp("tiny") / "model"
    tiny_base(folder).model_path()
    return folder
