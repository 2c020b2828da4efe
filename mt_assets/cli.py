"""The `mt-assets` command line: run the asset graph for a profile and look at its results.

    mt-assets materialize --profile demo            # every asset and check (alias: run)
    mt-assets translate notes.de.txt --adapter adapter_B -o notes.fr.txt
    mt-assets bleu                                  # the BLEU table of the last evaluation
    mt-assets recipe --profile paper > recipe.json  # the LoRA recipe, for python -m mt_assets.lib.lora.launch
    mt-assets export --adapter adapter_B -o model/  # base model + adapter merged, to deploy
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import sys
from pathlib import Path

BLEU_COLUMNS = ["system", "test_set", "bleu", "bleu_ci95", "chrf", "chrf_ci95", "bleu_p_vs_A", "chrf_p_vs_A", "bleu_p_vs_B",
                "chrf_p_vs_B", "off_target_rate", "empty_outputs", "training_table", "adapter_hash"]
"""The columns `mt-assets bleu --wide` shows; the default is the compact table (_compact)."""


def _profile(name: str) -> dict:
    from mt_assets.defs.profiles import load_profile

    return load_profile(name)


def _resources(profile: dict) -> dict:
    from mt_assets.defs.profiles import build_resources

    return build_resources(profile)


def _lake(profile: dict):
    from mt_assets.defs.io_manager import lake_root

    return lake_root(str(profile.get("data_lake", "data_lake")))


def _instance():
    """The Dagster instance of $DAGSTER_HOME (an ephemeral one without it).

    The first use of a fresh DAGSTER_HOME creates its SQLite tables; two runs starting at once
    would both create them and one would fail ("table ... already exists"). A file lock in
    DAGSTER_HOME lets one process create the storage while the other waits, then opens it."""
    import fcntl

    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return dg.DagsterInstance.ephemeral()
    Path(home).mkdir(parents=True, exist_ok=True)
    with open(Path(home) / ".mt_assets_instance.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            instance = dg.DagsterInstance.get()
            instance.get_runs(limit=1)  # every storage is created and migrated here, under the lock
            instance.get_latest_materialization_event(dg.AssetKey("opus_sample"))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return instance


def materialize(args: argparse.Namespace) -> int:
    """Materialize the selected assets (default: all) and their checks on the Dagster instance: one line
    per finished asset, then examples, the BLEU table and the chart (--verbose: Dagster's whole log)."""
    import dagster as dg

    from mt_assets.console import RUN_CONFIG, RunConsole, quiet_run
    from mt_assets.definitions import build_definitions

    profile = _profile(args.profile)
    defs = build_definitions(profile)
    graph = defs.resolve_asset_graph()
    selection = dg.AssetSelection.from_coercible(args.select) if args.select else dg.AssetSelection.all()
    keys = sorted(selection.resolve(graph), key=lambda k: k.to_user_string())
    console, run_config = None, {}
    if not args.verbose:
        console = RunConsole({key: sorted(c.name for c in graph.asset_check_keys if c.asset_key == key)
                              for key in keys})
        defs, run_config = console.attach(defs), RUN_CONFIG
    job = defs.resolve_implicit_global_asset_job_def()
    instance = _instance()
    print(f"mt-assets: materializing {len(keys)} assets with profile {profile['name']} ({profile['file']})")
    with contextlib.nullcontext() if args.verbose else quiet_run():
        result = job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=False,
                                        run_config=run_config)
    failed_checks = [
        evaluation for evaluation in result.get_asset_check_evaluations() if not evaluation.passed
    ]
    if console is None:
        for evaluation in failed_checks:
            print(f"  check {evaluation.asset_check_key.to_user_string()}: FAILED ({evaluation.severity.value})")
    else:
        console.finish()
    lake = str(_lake(profile))
    if not result.success:
        print(f"mt-assets: the run failed (run id {result.run_id}); see the error above. {_where_the_log_is(result)}",
              file=sys.stderr)
        return 1
    errors = [e.asset_check_key.to_user_string() for e in failed_checks if e.severity == dg.AssetCheckSeverity.ERROR]
    if errors:  # warnings (such as b_beats_a) are reported above and leave the exit code at 0
        print(f"mt-assets: {len(errors)} check(s) of severity ERROR failed: {', '.join(errors)} (run id "
              f"{result.run_id}); their metadata in the UI says what is wrong", file=sys.stderr)
        return 1
    print(f"mt-assets: done. Run id {result.run_id}. Outputs are in {Path(lake).resolve() if '://' not in lake else lake}")
    if dg.AssetKey("bleu_table") in keys:
        _print_examples(profile)
        bleu(argparse.Namespace(profile=args.profile, format="table", wide=False))
    if dg.AssetKey("bleu_chart") in keys:
        print(f"Chart: {_lake(profile) / 'bleu_chart' / 'bleu.png'} (loss curves: loss.png beside it)")
    return 0


def _where_the_log_is(result) -> str:
    """Where a run's whole log is: its compute logs and the UI on a DAGSTER_HOME, else --verbose."""
    home = os.environ.get("DAGSTER_HOME")
    logs = Path(home, "storage", result.run_id, "compute_logs") if home else None
    if logs and logs.is_dir():
        return f"The run's whole log: its compute logs in {logs}, or the run in the Dagster UI (dg dev)"
    return "The run's whole log: run again with --verbose"


def _input_lines(path: Path) -> list[str]:
    """The lines of a `translate` input file, split at LF (or CRLF) only, as ``wc -l`` counts.

    A missing, empty, binary or non-UTF-8 file stops the command, naming the file (and the line)."""
    from mt_assets.lib.data.corpus import split_lines

    if not path.is_file():
        raise SystemExit(f"mt-assets: input file {path} not found: give a text file, one sentence a line")
    data = path.read_bytes()
    nul = data.find(b"\x00")
    if nul >= 0:
        raise SystemExit(f"mt-assets: {path} is not a text file (a NUL byte at offset {nul}): "
                         "give a UTF-8 text file, one sentence a line")
    try:
        lines = split_lines(data.decode("utf-8").removeprefix("\ufeff"))
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise SystemExit(f"mt-assets: {path}, line {line}: bytes are not valid UTF-8 (offset {err.start}); "
                         "re-encode the file as UTF-8") from None
    if not any(line.strip() for line in lines):
        raise SystemExit(f"mt-assets: {path} holds no sentence to translate ({len(lines)} blank line(s)): "
                         "give a text file, one sentence a line")
    return lines


def _check_context(path: Path, lines: list[str], tokenizer, model, source_lang: str, target_lang: str,
                   max_new_tokens: int) -> None:
    """Stop, naming the lines, when a sentence's prompt plus max_new_tokens exceeds the model's context."""
    from mt_assets.lib.translation.prompt import check_prompts_fit

    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    try:
        check_prompts_fit(tokenizer, model.config, [line for _, line in numbered], source_lang, target_lang,
                          max_new_tokens, str(path), (f"line {n}" for n, _ in numbered),
                          "Split those lines into shorter sentences (or lower --max-new-tokens)")
    except ValueError as err:
        raise SystemExit(f"mt-assets: {err}") from None


def _print_examples(profile: dict, count: int = 3) -> None:
    """A few test pairs with the translations of systems A and B beside the reference."""
    import pandas as pd

    with (_lake(profile) / "translations.parquet").open("rb") as handle:
        table = pd.read_parquet(handle)
    wide = table.pivot(index="pair_id", columns="system", values="hypothesis")
    pairs = table.drop_duplicates("pair_id").set_index("pair_id").head(count)
    print("Examples (source, A: the base model, B: with adapter_B, reference):")
    for pair_id, row in pairs.iterrows():
        print(f"  source:    {row['source']}\n  A:         {wide.loc[pair_id, 'A']}\n"
              f"  B:         {wide.loc[pair_id, 'B']}\n  reference: {row['reference']}\n")


def translate(args: argparse.Namespace) -> int:
    """Translate a text file, one sentence a line, with the base model and (optionally) an adapter."""
    from mt_assets.defs.io_manager import adapter_folder
    from mt_assets.lib.translation.systems import attach_adapters, base_model_mismatch
    from mt_assets.lib.translation.translate import translate as run_translation

    profile = _profile(args.profile)
    resources = _resources(profile)
    experiment, base_model, evaluation = resources["experiment"], resources["base_model"], resources["evaluation"]
    source_lang = args.source_lang or experiment.source_lang
    target_lang = args.target_lang or experiment.target_lang
    lines = _input_lines(Path(args.input))
    max_new_tokens = args.max_new_tokens or evaluation.max_new_tokens
    tokenizer = base_model.load_tokenizer()
    model = base_model.load_model()
    _check_context(Path(args.input), lines, tokenizer, model, source_lang, target_lang, max_new_tokens)
    if args.adapter:
        folder = adapter_folder(_lake(profile), args.adapter)
        model = attach_adapters(model, {"default": (args.adapter, folder)})
        warning = base_model_mismatch(folder, args.adapter, base_model.reference()["base_model"])
        if warning:
            print(f"mt-assets: warning: {warning}", file=sys.stderr)
    sentences = [line for line in lines if line.strip()]
    outputs = iter(run_translation(model, tokenizer, sentences, source_lang, target_lang,
                                   batch_size=args.batch_size or evaluation.batch_size,
                                   max_new_tokens=max_new_tokens))
    translated = "".join(f"{next(outputs) if line.strip() else ''}\n" for line in lines)
    if args.output:
        Path(args.output).write_text(translated, encoding="utf-8")
        print(f"mt-assets: wrote {len(sentences)} translations ({source_lang}->{target_lang}) to {args.output}",
              file=sys.stderr)
    else:
        sys.stdout.write(translated)
    return 0


def bleu(args: argparse.Namespace) -> int:
    """Print the bleu_table asset of the profile's data lake."""
    import pandas as pd

    profile = _profile(args.profile)
    path = _lake(profile) / "bleu_table.parquet"
    if not path.exists():
        print(f"mt-assets: no BLEU table at {path}: materialize it first (mt-assets materialize)", file=sys.stderr)
        return 1
    with path.open("rb") as handle:
        table = pd.read_parquet(handle)
    if args.format == "csv":
        table.to_csv(sys.stdout, index=False)
        return 0
    print(f"BLEU table, {_test_pairs(table)} (± is the half-width of a 95% bootstrap CI)")
    print((_wide if args.wide else _compact)(table).to_markdown(index=False, disable_numparse=True))
    print(f"from {path}" + (f"; {table['bleu_signature'].iloc[0]}" if args.wide else "; every column: --wide"))
    return 0


def _test_pairs(table) -> str:
    """``200 test pairs``, or per test set when there are several: ``test pairs: test_A 200, tatoeba 200``."""
    if "test_set" not in table or table["test_set"].nunique() == 1:
        return f"{int(table['segments'].iloc[0])} test pairs"
    sizes = table.groupby("test_set", sort=False)["segments"].first()
    return "test pairs: " + ", ".join(f"{name} {int(n)}" for name, n in sizes.items())


def _p_value(p) -> str:
    """A p-value for reading: '<0.001' below that, '-' where there is none (a system against itself)."""
    import pandas as pd

    return "-" if p is None or pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _number(value, digits: int = 2) -> str:
    import pandas as pd

    return "-" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _compact(table):
    """One row per system, within 100 columns: scores with their CI half-widths, p against A, off-target."""
    import pandas as pd

    several = "test_set" in table and table["test_set"].nunique() > 1
    return pd.DataFrame({
        "system": table["system"],
        **({"test set": table["test_set"]} if several else {}),
        "BLEU": [f"{_number(b)} ± {_number(ci)}" for b, ci in zip(table["bleu"], table["bleu_ci95"])],
        "chrF": [f"{_number(c)} ± {_number(ci)}" for c, ci in zip(table["chrf"], table["chrf_ci95"])],
        "p vs A (BLEU, chrF)": [f"{_p_value(b)}, {_p_value(c)}" if not pd.isna(b) else "-"
                                for b, c in zip(table["bleu_p_vs_A"], table["chrf_p_vs_A"])],
        "off-target": [_number(rate) for rate in table["off_target_rate"]],
    })


def _wide(table):
    """Every column of BLEU_COLUMNS, numbers rounded for reading (the table keeps full precision)."""
    shown = table[[c for c in BLEU_COLUMNS if c in table and (c != "test_set" or table[c].nunique() > 1)]].copy()
    for column in shown:
        if "_p_vs_" in column:
            shown[column] = shown[column].map(_p_value)
        elif shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(_number)
    if "adapter_hash" in shown:
        shown["adapter_hash"] = shown["adapter_hash"].str[:12]
    return shown.fillna("")


def recipe(args: argparse.Namespace) -> int:
    """Print the profile's LoRA recipe as the JSON file that lib.lora.launch reads."""
    print(_resources(_profile(args.profile))["training"].recipe().to_json())
    return 0


def export(args: argparse.Namespace) -> int:
    """Write the base model with an adapter merged in, its tokenizer, lineage and README (and GGUF)."""
    from mt_assets.defs.io_manager import adapter_folder
    from mt_assets.lib.lora import export as merged
    from mt_assets.lib.translation.prompt import build_prompt
    from mt_assets.lib.lora.adapter_folder import read_lineage
    from mt_assets.lib.translation.translate import check_adapter_folder

    profile = _profile(args.profile)
    resources = _resources(profile)
    base_model, experiment = resources["base_model"], resources["experiment"]
    folder = adapter_folder(_lake(profile), args.adapter)
    check_adapter_folder(folder, args.adapter)  # a damaged adapter is named with the fix, before any loading
    trained_on = read_lineage(folder).get("base_model")
    if trained_on and trained_on != base_model.reference()["base_model"]:
        raise SystemExit(f"mt-assets: {args.adapter} was trained on {trained_on}, not on this profile's base model "
                         f"{base_model.reference()['base_model']}: export it with the profile it was trained with")
    try:
        done = merged.export_adapter(
            base_model.load_model(), base_model.load_tokenizer(), folder, Path(args.output),
            name=args.adapter, converter=merged.find_converter(),
            example_prompt=build_prompt("<sentence>", experiment.source_lang, experiment.target_lang))
    except merged.ExportError as err:
        raise SystemExit(f"mt-assets: {err}") from None
    print(f"mt-assets: exported {args.adapter} merged into its base model to {done.folder}: {', '.join(done.files)}")
    print(f"mt-assets: {done.gguf_skipped}" if done.gguf_skipped else f"mt-assets: GGUF: {done.gguf}")
    return 0


def _at_least_one(text: str) -> int:
    """An argparse type: an integer of at least 1 (0 would silently mean the profile's setting)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give an integer of at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mt-assets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    profile = argparse.ArgumentParser(add_help=False)
    profile.add_argument("--profile", default=os.environ.get("MT_ASSETS_PROFILE", "demo"),
                         help="profile name (demo, paper) or path of a profile YAML file (default: demo)")

    run = commands.add_parser("materialize", aliases=["run"], parents=[profile],
                              help="materialize assets and run their checks")
    run.add_argument("--select", default=None,
                     help="Dagster asset selection, e.g. 'train_A+' (default: every asset)")
    run.add_argument("--verbose", action="store_true",
                     help="print Dagster's whole log (every event); default: one line per finished asset")
    run.set_defaults(handler=materialize)

    text = commands.add_parser("translate", parents=[profile],
                               help="translate a text file (one sentence a line) with the base model and an adapter")
    text.add_argument("input", help="text file, one sentence a line (blank lines stay blank)")
    text.add_argument("--adapter", default=None,
                      help="adapter asset of the data lake (adapter_B, adapter_C, adapter_D) or an adapter folder; "
                      "default: none (system A, the base model)")
    text.add_argument("-o", "--output", default=None, help="output file (default: standard output)")
    for flag, kind, setting in (("--source-lang", str, "experiment.source_lang"),
                                ("--target-lang", str, "experiment.target_lang"),
                                ("--batch-size", _at_least_one, "evaluation.batch_size"),
                                ("--max-new-tokens", _at_least_one, "evaluation.max_new_tokens")):
        text.add_argument(flag, type=kind, default=None, help=f"default: the profile's {setting}")
    text.set_defaults(handler=translate)

    scores = commands.add_parser("bleu", parents=[profile], help="print the BLEU table of the last evaluation")
    scores.add_argument("--format", choices=["table", "csv"], default="table")
    scores.add_argument("--wide", action="store_true",
                        help="every column (p against B, lineage, signature); default: a compact table")
    scores.set_defaults(handler=bleu)

    lora = commands.add_parser("recipe", parents=[profile], help="print the profile's LoRA recipe as JSON")
    lora.set_defaults(handler=recipe)

    deploy = commands.add_parser("export", parents=[profile],
                                 help="write the base model with an adapter merged in, to load without PEFT")
    deploy.add_argument("--adapter", required=True,
                        help="adapter asset of the data lake (adapter_B, adapter_C, adapter_D) or an adapter folder")
    deploy.add_argument("-o", "--output", required=True, help="new (or empty) folder to write the model into")
    deploy.set_defaults(handler=export)

    args = parser.parse_args(argv)
    return args.handler(args)


def run(argv: list[str] | None = None) -> None:
    """The `mt-assets` command: `main`, then the process ends with main's code after Python's exit
    handlers, skipping the interpreter's teardown, where PyTorch's C++ destructors can abort
    (exit -6, "terminate called without an active exception") after a run that succeeded."""
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's errors and --help
        code = stop.code
    if not isinstance(code, int):  # None or a message: Python's own exit prints and maps it
        raise SystemExit(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
