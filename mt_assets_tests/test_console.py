"""What `mt-assets materialize` prints: one line per asset with its checks folded in, progress bars of
at most 11 lines on a pipe, a failed step's whole error, and the closing block (examples, the BLEU
table, the chart); --verbose prints Dagster's whole log."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mt_assets.console import RUN_CONFIG, ProgressLine, RunConsole
from mt_assets_tests.ops_support import write_profile

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 150


def mt_assets(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command in a process of its own, stdout and stderr pipes (not a terminal), an ephemeral instance."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "mt_assets.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1800)


def asset_lines(out: str) -> dict[str, str]:
    """The per-asset lines (`✓ name   1.2s  ✓ 4 checks`), by asset name; a name twice fails."""
    lines = [line for line in out.splitlines() if line.startswith("✓ ")]
    names = [line.split()[1] for line in lines]
    assert len(names) == len(set(names)), f"an asset printed twice: {names}"
    return dict(zip(names, lines))


def test_progress_line_on_a_pipe_prints_at_most_one_line_per_tenth():
    stream = io.StringIO()  # not a terminal
    bar = ProgressLine(stream)
    for done in range(1, 1001):
        bar.update("adapter_B training", done, 1000, f"loss {1 / done:.3f}")
    lines = stream.getvalue().splitlines()
    assert 1 < len(lines) <= 11 and "\r" not in stream.getvalue()
    assert lines[-1].startswith("  adapter_B training [####################] 1000/1000 loss 0.001")
    assert "100/1000" in lines[1] and "[##" in lines[1]  # the first tenth done: two of twenty marks

    for done in range(1, 151):  # the same label again (system A on a second test set): a bar of its own
        bar.update("adapter_B training", done, 150)
    again = stream.getvalue().splitlines()[len(lines):]
    assert 1 < len(again) <= 11 and again[-1].startswith("  adapter_B training [####################] 150/150")

    terminal = io.StringIO()
    bar = ProgressLine(terminal, tty=True)
    for done in range(1, 1001):
        bar.update("system A", done, 1000)
    bar.clear()
    assert terminal.getvalue().count("\n") == 0 and terminal.getvalue().count("\r") == 1001  # one line, redrawn


def test_translate_reports_progress_to_its_caller_instead_of_a_tqdm_stream(untrained_tiny_model, capfd):
    from mt_assets.lib.models.loading import load_causal_lm, load_tokenizer
    from mt_assets.lib.translation.translate import translate

    tokenizer, model = load_tokenizer(str(untrained_tiny_model)), load_causal_lm(str(untrained_tiny_model), device="cpu")
    capfd.readouterr()
    reports = []
    outputs = translate(model, tokenizer, ["Guten Morgen", "Danke", "Wir fahren morgen nach Berlin"], "de", "fr",
                        batch_size=2, max_new_tokens=3, progress=lambda done, total: reports.append((done, total)))
    assert len(outputs) == 3 and reports == [(2, 3), (3, 3)]
    assert "sent" not in capfd.readouterr().err  # no tqdm bar beside the caller's
    translate(model, tokenizer, ["Danke"], "de", "fr", max_new_tokens=3)
    assert "translating:" in capfd.readouterr().err  # without a caller's progress: tqdm's bar


def test_run_console_folds_checks_and_shows_progress_warnings_and_errors():
    """A small graph run with RunConsole: a line per asset once its checks are done, a bar from the
    progress lines an asset logs, the asset's own warning, a failed step's whole error, what was not made."""

    @dg.asset
    def made(context):
        context.log.info("step 5/10: {'loss': 1.5}")  # as lib.lora.launch reports through Pipes
        context.log.info("step 10/10: {'loss': 0.75}")
        context.log.info("an info line the console leaves to the event log")
        context.log.warning("our own warning: 3 rows dropped (setting x)")
        return 1

    @dg.asset
    def broken(made):
        raise ValueError("broken cannot be made: setting y is 0; give a number above 0")

    @dg.asset
    def after(broken):
        return broken

    @dg.asset_check(asset=made)
    def is_one(made):
        return dg.AssetCheckResult(passed=made == 1)

    @dg.asset_check(asset=made)
    def is_two(made):
        return dg.AssetCheckResult(passed=made == 2, severity=dg.AssetCheckSeverity.WARN)

    out, err = io.StringIO(), io.StringIO()
    console = RunConsole({made.key: ["is_one", "is_two"], broken.key: [], after.key: []}, out, err)
    defs = console.attach(dg.Definitions(assets=[made, broken, after], asset_checks=[is_one, is_two]))
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(run_config=RUN_CONFIG,
                                                                             raise_on_error=False)
    console.finish()
    assert not result.success
    lines = out.getvalue().splitlines()
    assert lines[0] == "  made training [##########..........] 5/10 loss 1.5"
    assert lines[1] == "  made training [####################] 10/10 loss 0.75"
    assert lines[2].startswith("✓ made ") and lines[2].endswith("s  ✓ 1 check, ✗ is_two: FAILED (WARN)")
    assert lines[3:] == ["✗ not materialized: broken, after"]
    assert "info line" not in out.getvalue() + err.getvalue()
    assert "  warning (made): our own warning: 3 rows dropped (setting x)" in err.getvalue()
    failure = err.getvalue()[err.getvalue().index("✗ broken failed:"):]
    assert "ValueError: broken cannot be made: setting y is 0; give a number above 0" in failure
    assert 'File "' in failure and "test_console.py" in failure  # the traceback, to the line that raised


@pytest.fixture
def one_epoch_profile(tmp_path, untrained_tiny_model):
    return write_profile(tmp_path / "one_epoch.yaml", tmp_path / "lake", untrained_tiny_model, pretrain_steps=0,
                         executor={"type": "in_process"}, training={"epochs": 1, "batch_size": 16})


def test_materialize_prints_a_line_per_asset_and_ends_with_examples_table_and_chart(one_epoch_profile, tmp_path):
    from mt_assets.definitions import build_definitions
    from mt_assets.defs.profiles import load_profile

    run = mt_assets("materialize", "--profile", str(one_epoch_profile), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    out, lines = run.stdout, (run.stdout + run.stderr).splitlines()
    assert len(lines) <= MAX_LINES, "\n".join(lines)
    graph = build_definitions(load_profile(str(one_epoch_profile))).resolve_asset_graph()
    per_asset = asset_lines(out)
    assert set(per_asset) == {key.to_user_string() for key in graph.get_all_asset_keys()}
    for name, line in per_asset.items():  # every check folded into its asset's line
        checks = [c for c in graph.asset_check_keys if c.asset_key.to_user_string() == name]
        failed = line.count("FAILED (")
        shown = int(line.split("✓ ")[2].split()[0]) if line.count("✓ ") > 1 else 0
        assert shown + failed == len(checks), (line, checks)
    assert "✓ 4 checks" in per_asset["opus_sample"]
    assert "b_beats_a: FAILED (WARN)" in per_asset["bleu_table"]  # one epoch on the untrained model
    for noise in ("Type check passed", "STEP_SUCCESS", "{'loss'", "FutureWarning", "PreviewWarning",
                  "accelerate launch", "it/s]"):
        assert noise not in run.stdout + run.stderr, noise
    bars = [line for line in out.splitlines() if line.startswith("  adapter_B training [")]
    assert 1 <= len(bars) <= 11 and bars[-1].split("] ")[1].split()[0].split("/")[0] == \
        bars[-1].split("] ")[1].split()[0].split("/")[1]  # the bar reached its end
    assert "Traceback" not in run.stderr and "warning (" not in run.stderr, run.stderr  # nothing went wrong

    closing = out[out.index("mt-assets: done."):].splitlines()
    examples, table = closing.index(next(line for line in closing if line.startswith("Examples"))), \
        closing.index(next(line for line in closing if line.startswith("| system")))
    assert 0 < examples < table
    assert sum(line.startswith("  source:") for line in closing[examples:table]) == 3
    systems = [line.split("|")[1].strip() for line in closing[table + 2:] if line.startswith("| ")]
    assert systems == ["A", "A_fewshot", "B", "C", "D", "E"]
    assert closing[-1].startswith("Chart: ") and Path(closing[-1].split()[1]).is_file()
    assert closing[-1].split()[1] == str(tmp_path / "lake" / "bleu_chart" / "bleu.png")


def test_verbose_prints_dagsters_whole_log(one_epoch_profile, tmp_path):
    quiet = mt_assets("materialize", "--profile", str(one_epoch_profile), "--select", "opus_sample", cwd=tmp_path)
    verbose = mt_assets("materialize", "--profile", str(one_epoch_profile), "--select", "opus_sample", "--verbose",
                        cwd=tmp_path)
    assert quiet.returncode == verbose.returncode == 0, verbose.stderr[-3000:]
    quiet_lines = (quiet.stdout + quiet.stderr).splitlines()
    verbose_text = verbose.stdout + verbose.stderr
    assert len(quiet_lines) == 3 and list(asset_lines(quiet.stdout)) == ["opus_sample"]
    assert len(verbose_text.splitlines()) > 5 * len(quiet_lines)
    assert 'STEP_SUCCESS - Finished execution of step "opus_sample"' in verbose_text
    assert "ASSET_CHECK_EVALUATION" in verbose_text and not asset_lines(verbose.stdout)


def test_a_failing_asset_prints_its_whole_error_in_quiet_mode(tmp_path, untrained_tiny_model):
    """training.max_length 8 holds no prompt: adapter_B fails at run time, before its trainer starts."""
    profile = write_profile(tmp_path / "short.yaml", tmp_path / "lake", untrained_tiny_model, pretrain_steps=0,
                            executor={"type": "in_process"}, training={"max_length": 8})
    run = mt_assets("materialize", "--profile", str(profile), "--select", "++adapter_B", cwd=tmp_path)
    assert run.returncode == 1
    assert "✗ adapter_B failed:" in run.stderr
    error = run.stderr[run.stderr.index("✗ adapter_B failed:"):]
    assert "do not fit in max_length 8 tokens (setting training.max_length)" in error  # the message, whole
    assert "Traceback" in error or 'File "' in error  # and where it came from
    assert "The run's whole log: run again with --verbose" in run.stderr
    assert "✓ train_A" in run.stdout and "adapter_B" not in asset_lines(run.stdout)
    assert len((run.stdout + run.stderr).splitlines()) <= MAX_LINES


def test_quiet_pip_still_prints_its_errors(tmp_path):
    """dev.py installs with PIP_QUIET (no line per package): a requirement pip cannot install still
    shows pip's error, naming it, and fails."""
    import dev

    (tmp_path / "requirements.txt").write_text(f"{tmp_path / 'no-such-project'}\n")
    run = subprocess.run([sys.executable, "-m", "pip", "install", *dev.PIP_QUIET, "--no-index", "-r",
                          str(tmp_path / "requirements.txt")], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "ERROR" in run.stderr and "no-such-project" in run.stderr, run.stdout + run.stderr
    assert len((run.stdout + run.stderr).splitlines()) <= 5
