"""What `mt-assets materialize` prints while a run goes: one line per finished asset, progress bars.

Dagster's console logger prints every event of a run (hundreds of lines: each input, output and type
check). Without --verbose, `RunConsole` takes its place: it reads the same events and prints

    ✓ opus_sample            0.4s  ✓ 4 checks
    ✓ adapter_B             52.1s  ✗ training_loss_decreased: FAILED (ERROR)

once an asset and all its checks are done; a failed step prints its whole error. Warnings and errors
that assets log still show (on standard error); their info lines and Dagster's debug events stay in the
run's event log and compute logs (the Dagster UI, or --verbose). Training and translation progress
becomes one line each (`ProgressLine`).
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import dagster as dg

from mt_assets.lib.quiet import quiet_environment, quiet_libraries

LOGGER = "mt_assets_console"
RUN_CONFIG = {"loggers": {LOGGER: {}}}
"""The run config that puts RunConsole (`RunConsole.attach`) in place of Dagster's console logger."""
PROGRESS = (
    re.compile(r"^(?P<what>(?:pretrain )?step) (?P<done>\d+)/(?P<total>\d+)\b"),  # lib.lora / lib.models.tiny
    re.compile(r"^(?P<what>system \w+): (?P<done>\d+)/(?P<total>\d+) sentences"),  # defs.evaluation
    re.compile(r"^(?P<what>synthetic pairs): (?P<done>\d+)/(?P<total>\d+) kept"),  # defs.synthetic
)
"""Log lines that report progress (`step 40/120: {...}`): they move the step's progress bar."""
LABELS = {"step": "training", "pretrain step": "pretraining"}
BAR_WIDTH = 20


@contextmanager
def quiet_run() -> Iterator[None]:
    """The library filters of lib.quiet, and Dagster's, for the duration of a run (restored after)."""
    with warnings.catch_warnings(), quiet_environment():
        quiet_libraries()
        # Dagster marks APIs of the version this project pins (pyproject) as preview or beta (e.g.
        # `PipesMessageReader.expected_writer_count`, which Pipes itself reads): nothing to change here
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        with _library_bars_off():
            yield


@contextmanager
def _library_bars_off() -> Iterator[None]:
    """transformers' own bars ("Loading weights", "Writing model shards") off, restored after: they read
    HF_HUB_DISABLE_PROGRESS_BARS only when transformers is first imported, which may be before the run."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


class ProgressLine:
    """A progress bar on one line: redrawn in place on a terminal; elsewhere (a file, a pipe) at
    most one line per tenth of the work, so a log keeps 11 lines of a bar at most. A label whose
    count goes back (the same system on the next test set) starts a new bar."""

    def __init__(self, stream: TextIO, tty: bool | None = None):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.shown = False  # a bar is on the terminal's current line
        self.tenths: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def update(self, label: str, done: int, total: int, note: str = "") -> None:
        total = max(total, 1)
        done = min(max(done, 0), total)
        filled = BAR_WIDTH * done // total
        line = f"  {label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} {note}".rstrip()
        if self.tty:
            self.stream.write(f"\r\x1b[K{line}")
            self.shown = True
        else:
            if done < self.done.get(label, 0):  # a new bar under the same label
                self.tenths.pop(label, None)
            self.done[label] = done
            tenth = 10 * done // total
            if tenth <= self.tenths.get(label, -1):
                return
            self.tenths[label] = tenth
            self.stream.write(f"{line}\n")
        self.stream.flush()

    def clear(self) -> None:
        """Remove the bar from the terminal's line before other output is printed there."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


class RunConsole(logging.Handler):
    """Reads a run's Dagster log records and prints what a user follows (see the module docstring).

    `checks`: for each asset to be materialized, the names of its checks in this run (its line
    waits for them)."""

    def __init__(self, checks: dict[dg.AssetKey, list[str]], out: TextIO | None = None,
                 err: TextIO | None = None, tty: bool | None = None):
        super().__init__(logging.DEBUG)
        self.checks = checks
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.bar = ProgressLine(self.out, tty)
        self.assets_of_step: dict[str, list[dg.AssetKey]] = defaultdict(list)
        self.seconds: dict[dg.AssetKey, float] = {}
        self.results: dict[dg.AssetKey, list[tuple[str, bool, str]]] = defaultdict(list)
        self.printed: set[dg.AssetKey] = set()

    def attach(self, defs: dg.Definitions) -> dg.Definitions:
        """`defs` with this console as a logger; runs given RUN_CONFIG use it in place of Dagster's."""
        def build(_context) -> logging.Logger:
            logger = logging.Logger(LOGGER, logging.DEBUG)
            logger.addHandler(self)
            return logger

        logger = dg.LoggerDefinition(build, description="One line per finished asset (mt_assets.console)")
        return dg.Definitions.merge(defs, dg.Definitions(loggers={LOGGER: logger}))

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event, step = meta.get("dagster_event"), meta.get("step_key") or ""
        message = meta.get("orig_message", record.getMessage())
        kind = event.event_type_value if event is not None else None
        if kind == "ASSET_MATERIALIZATION":
            self.assets_of_step[step].append(event.asset_key)
        elif kind == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            self.results[evaluation.asset_key].append((evaluation.check_name, evaluation.passed,
                                                       evaluation.severity.value))
            self._print_if_done(evaluation.asset_key)
        elif kind == "STEP_SUCCESS":
            for key in self.assets_of_step[step]:
                self.seconds[key] = event.event_specific_data.duration_ms / 1000
                self._print_if_done(key)
        elif kind == "STEP_FAILURE":
            self._step_failed(step, event)
        elif kind is None and record.levelno < logging.WARNING:
            self._progress(step, message)
        elif record.levelno >= logging.WARNING and kind not in ("PIPELINE_FAILURE", "RUN_FAILURE"):
            self._write(self.err, f"  {record.levelname.lower()} ({step or 'run'}): {message}")

    def _progress(self, step: str, message: str) -> None:
        for pattern in PROGRESS:
            match = pattern.match(message)
            if match:
                label = f"{step} {LABELS.get(match['what'], match['what'])}"
                loss = re.search(r"'loss': ([0-9.]+)|loss ([0-9.]+)", message)
                note = f"loss {loss[1] or loss[2]}" if loss else ""
                self.bar.update(label, int(match["done"]), int(match["total"]), note)
                return

    def _print_if_done(self, key: dg.AssetKey) -> None:
        expected = self.checks.get(key, [])
        if key in self.printed or key not in self.seconds or len(self.results[key]) < len(expected):
            return
        self.printed.add(key)
        self._write(self.out, self.asset_line(key))

    def asset_line(self, key: dg.AssetKey) -> str:
        results, expected = self.results[key], self.checks.get(key, [])
        passed = sum(ok for _, ok, _ in results)
        folded = [f"✓ {passed} check{'s' * (passed != 1)}"] if passed else []
        folded += [f"✗ {name}: FAILED ({severity})" for name, ok, severity in results if not ok]
        if len(results) < len(expected):
            missing = sorted(set(expected) - {name for name, _, _ in results})
            folded.append(f"not run: {', '.join(missing)}")
        return f"✓ {key.to_user_string():<24} {self.seconds[key]:7.1f}s  {', '.join(folded)}".rstrip()

    def _step_failed(self, step: str, event) -> None:
        data = event.event_specific_data
        error = data.error.to_string() if data is not None and data.error is not None else event.message or ""
        self._write(self.err, f"✗ {step} failed:\n" + "\n".join(f"    {line}" for line in error.rstrip().splitlines()))

    def finish(self) -> None:
        """Print the assets whose checks did not all run (a failed or skipped check step), then the
        selected assets that were not materialized (a failed step, or one upstream of them)."""
        for key in sorted(set(self.seconds) - self.printed, key=dg.AssetKey.to_user_string):
            self.printed.add(key)
            self._write(self.out, self.asset_line(key))
        missing = [key.to_user_string() for key in self.checks if key not in self.seconds]
        if missing:
            self._write(self.out, f"✗ not materialized: {', '.join(missing)}")

    def _write(self, stream: TextIO, text: str) -> None:
        self.bar.clear()
        stream.write(f"{text}\n")
        stream.flush()
