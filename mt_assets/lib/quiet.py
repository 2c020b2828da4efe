"""A quiet console: library notices and progress streams that this project cannot act on, off at
their source. Used by `mt-assets materialize` (without --verbose) and by the training process it
starts (lib.lora.launch, told by QUIET_ENV). The project's own warnings and every error still show.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

QUIET_ENV = "MT_ASSETS_QUIET"
"""Set to 1 while `mt-assets materialize` runs quietly; processes it starts inherit it."""
QUIET_ENVIRONMENT = {
    QUIET_ENV: "1",
    # tqdm bars of the libraries (model loading and saving, dataset preparation, the teacher's and the
    # translation's bars) redraw a line many times a second, which a log file keeps as a stream; the
    # console draws one bar per step from the progress the assets log instead (mt_assets.console)
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def quiet_libraries() -> None:
    """Warning filters and log levels for the libraries; each names exactly what it hides and why."""
    # transformers, PEFT and TRL announce their own deprecations (e.g. `is_gradient_checkpointing`,
    # read by TRL and PEFT): the calls are inside the libraries, the pinned versions behave as tested
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|trl|accelerate)(\.|$)")
    logging.getLogger("transformers.trainer_utils").addFilter(_mtime_notice)  # once: a filter is added once


def _mtime_notice(record: logging.LogRecord) -> bool:
    """False for "mtime may not be reliable on this filesystem": transformers then orders checkpoints
    by number, which is what lib.lora.checkpoints relies on anyway."""
    return "mtime may not be reliable" not in record.getMessage()


@contextmanager
def quiet_environment() -> Iterator[None]:
    """QUIET_ENVIRONMENT set for the duration (processes started meanwhile inherit it), restored after."""
    before = {name: os.environ.get(name) for name in QUIET_ENVIRONMENT}
    os.environ.update(QUIET_ENVIRONMENT)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
