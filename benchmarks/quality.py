"""The quality benchmark: which training data helps a real model translate, in one table.

Runs the experiment of profile `quality` (Gemma 3 270M on 1,000 Multi30k training pairs, 800 train_A /
200 test_A, plus 200 out-of-domain Tatoeba pairs) through the asset graph, once per teacher:

1. `oracle` (profile quality): the perfect teacher (real held-out Multi30k pairs). Materializes every
   asset: systems A (zero-shot), A_fewshot, B (LoRA on train_A), C and D, and E (B and C merged).
2. `gemma` (profile quality-gemma): Gemma 3 270M itself as the teacher, translating Multi30k source
   sentences (sequence-level distillation). Materializes synth_B and what follows from it except
   adapter_E; A, A_fewshot, B and E are shared with the first run: their adapters are not retrained and
   their translations come from the translation cache (evaluation.cache_dir), so they are computed once.

Both runs use one data lake and one Dagster instance under --work, so the UI shows their lineage
(`DAGSTER_HOME=<work>/dagster_home dg dev`). The script reads each run's bleu_table and writes

    benchmarks/results/quality-<date>.json   {"rows": [...], ...}: one row per system and test set
    benchmarks/results/quality-<date>.png    BLEU and chrF with 95% CIs, per test set

and prints the table. Rows: A, A_fewshot, B, C_oracle, D_oracle, E, C_gemma, D_gemma on `multi30k`
and `tatoeba`, with BLEU and chrF and their CI half-widths, paired bootstrap p-values against A and B,
the off-target rate, training seconds (adapters; E: its merge) and decoding tokens per second.

    python benchmarks/quality.py                      # both teachers, about an hour on 2 CPU cores
    python benchmarks/quality.py --teachers oracle    # the first run only
    python benchmarks/quality.py --profile my.yaml    # another base profile (e.g. a GPU one, below)

Needs the shared corpora ($MT_ASSETS_SHARED_DATA, default ../shared/data beside the project). On a GPU,
point --profile at a profile that `extends: quality` and sets base_model (e.g. type hub,
EleutherAI/gpt-neo-1.3B) and training.mixed_precision; the same command gives the paper-scale table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEACHERS = {"oracle": "quality", "gemma": "quality-gemma"}
"""Teacher run -> the profile it extends (mt_assets/profiles/)."""
SHARED = ("A", "A_fewshot", "B", "E")
"""Systems that do not depend on the teacher run (E merges B with the oracle teacher's C)."""
PER_TEACHER = ("C", "D")
"""Systems trained on the teacher's data: reported as C_<teacher>, D_<teacher>."""
SECOND_RUN = " or ".join(f"key:{asset}" for asset in ("synth_B", "combined_C", "adapter_C", "adapter_D", "translations",
                                                     "bleu_table", "bleu_chart"))
"""What a later teacher run materializes: everything downstream of the teacher except adapter_E."""
ADAPTERS = {"B": "adapter_B", "C": "adapter_C", "D": "adapter_D", "E": "adapter_E"}


def run_profile(work: Path, teacher: str, base_profile: str, teacher_profiles: dict[str, str]) -> Path:
    """The profile file of one teacher run. The oracle run: `base_profile` with this benchmark's lake and
    caches; a later run: the oracle run's profile with the teacher and synthesis sections of the
    teacher's packaged profile (so only the teacher differs)."""
    if teacher == "oracle":
        extends = base_profile if not Path(base_profile).suffix else str(Path(base_profile).resolve())
        text = (f"extends: {json.dumps(extends)}\n"
                f"data_lake: {json.dumps(str(work / 'lake'))}\n"
                f"synthesis:\n  cache_dir: {json.dumps(str(work / 'teacher_cache'))}\n"
                f"evaluation:\n  cache_dir: {json.dumps(str(work / 'translation_cache'))}\n")
    else:
        text = f"extends: {json.dumps(str(work / 'quality-oracle.yaml'))}\n" + teacher_sections(teacher_profiles[teacher])
    path = work / f"quality-{teacher}.yaml"
    path.write_text(f"# written by benchmarks/quality.py for its {teacher!r} teacher run\n{text}")
    return path


def teacher_sections(profile_name: str) -> str:
    """The teacher and synthesis sections of a packaged profile, as YAML text (the data lake and the
    cache folders stay the benchmark's)."""
    import yaml

    from mt_assets.defs.profiles import profile_path

    profile = yaml.safe_load(profile_path(profile_name).read_text())
    sections = {k: profile[k] for k in ("teacher", "synthesis") if k in profile}
    sections.get("synthesis", {}).pop("cache_dir", None)
    return yaml.safe_dump(sections, sort_keys=False)


def materialize(profile: Path, select: str | None, work: Path, log: Path) -> float | None:
    """`mt-assets materialize` of `profile` on the benchmark's Dagster instance; its seconds, None when it
    failed. The console lines go to the terminal and to `log`."""
    command = [sys.executable, "-m", "mt_assets.cli", "materialize", "--profile", str(profile)]
    if select:
        command += ["--select", select]
    env = {**os.environ, "DAGSTER_HOME": str(work / "dagster_home"), "PYTHONUNBUFFERED": "1"}
    (work / "dagster_home").mkdir(parents=True, exist_ok=True)
    (work / "dagster_home" / "dagster.yaml").touch()  # a local instance with the defaults, said so
    started = time.perf_counter()
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1)
        for line in process.stdout:
            print(line, end="", flush=True)
            out.write(line)
    if process.wait() != 0:
        print(f"[quality] materializing {profile} failed (exit {process.returncode}); its output is in {log}",
              flush=True)
        return None
    return time.perf_counter() - started


def latest_metadata(work: Path, asset: str) -> dict:
    """The metadata of `asset`'s latest materialization on the benchmark's instance, as plain values."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        if event is None:
            return {}
        step = event.step_key
        stats = {s.step_key: s for s in instance.get_run_step_stats(event.run_id)}
        metadata = {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}
        if step in stats and stats[step].end_time and stats[step].start_time:
            metadata["step_seconds"] = stats[step].end_time - stats[step].start_time
        return metadata


def train_seconds(work: Path, system: str) -> float:
    """Seconds the system's adapter took to train (the trainer's wall clock in the adapter's metadata;
    E, merged: its step); 0 for the base model's systems."""
    if system not in ADAPTERS:
        return 0.0
    metadata = latest_metadata(work, ADAPTERS[system])
    return float(metadata.get("wall_seconds", metadata.get("step_seconds", float("nan"))))


def teacher_rows(lake: Path, work: Path, teacher: str, systems: tuple[str, ...]) -> list[dict]:
    """Rows of `systems` from the lake's bleu_table (after the `teacher` run), with training seconds
    and decoding speed; C and D are renamed C_<teacher> and D_<teacher>."""
    import pandas as pd

    table = pd.read_parquet(lake / "bleu_table.parquet")
    decoding = latest_metadata(work, "translations").get("decoding", {})
    seconds = {system: round(train_seconds(work, system), 1) for system in systems}  # one instance read each
    rows = []
    for record in table[table["system"].isin(systems)].to_dict("records"):
        system, test_set = record["system"], record["test_set"]
        speed = decoding.get(test_set, {}).get(system, {})
        rows.append({
            "system": f"{system}_{teacher}" if system in PER_TEACHER else system,
            "test_set": test_set,
            **{k: _number(record[k]) for k in ("bleu", "bleu_ci95", "chrf", "chrf_ci95", "bleu_p_vs_A",
                                                "bleu_p_vs_B", "chrf_p_vs_A", "chrf_p_vs_B", "off_target_rate")},
            "segments": int(record["segments"]),
            "train_seconds": seconds[system],
            "tokens_per_s": _number(speed.get("tokens_per_s")),
            "translations_reused": bool(speed.get("reused", False)),
            "adapter_hash": record.get("adapter_hash", ""),
            "training_table_hash": record.get("training_table_hash", ""),
            "test_table_hash": record.get("test_table_hash", ""),
        })
    return rows


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else round(number, 4)


def synthesis_counts(work: Path) -> dict:
    """What the latest synth_B run kept and filtered, from its metadata."""
    metadata = latest_metadata(work, "synth_B")
    return {k: v for k, v in metadata.items() if isinstance(v, (int, float, str, dict, list)) and k != "preview"}


def print_table(rows: list[dict]) -> str:
    import pandas as pd

    table = pd.DataFrame(rows)[["test_set", "system", "bleu", "bleu_ci95", "chrf", "chrf_ci95", "bleu_p_vs_A",
                                "bleu_p_vs_B", "off_target_rate", "train_seconds", "tokens_per_s"]]
    text = table.sort_values(["test_set"], kind="stable").to_markdown(index=False, floatfmt=".3g")
    print(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teachers", default="oracle,gemma",
                        help="teacher runs, in order (default oracle,gemma; the first must be oracle)")
    parser.add_argument("--profile", default="quality",
                        help="base profile for the oracle run instead of `quality` (name or YAML path)")
    parser.add_argument("--gemma-profile", default=TEACHERS["gemma"],
                        help="profile whose teacher and synthesis sections make the gemma run (default quality-gemma)")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "work" / "quality",
                        help="data lake, caches and Dagster instance of the runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    teachers = [t.strip() for t in args.teachers.split(",") if t.strip()]
    unknown = [t for t in teachers if t not in TEACHERS]
    if unknown or not teachers or teachers[0] != "oracle":
        parser.error(f"--teachers {args.teachers!r}: a comma-separated list of {sorted(TEACHERS)} starting with oracle")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    lake, log = args.work / "lake", args.work / "materialize.log"
    started, rows, runs = time.perf_counter(), [], []
    stem = args.out / f"quality-{dt.date.today().isoformat()}"
    for teacher in teachers:
        profile = run_profile(args.work, teacher, args.profile, {**TEACHERS, "gemma": args.gemma_profile})
        first = teacher == teachers[0]
        print(f"[quality] teacher run {teacher!r}: profile {profile}", flush=True)
        seconds = materialize(profile, None if first else SECOND_RUN, args.work, log)
        run = {"teacher": teacher, "profile": str(profile), "seconds": None if seconds is None else round(seconds, 1),
               "synthesis": synthesis_counts(args.work),
               "translation_cache": latest_metadata(args.work, "translations").get("translation_cache")}
        runs.append(run)
        if seconds is None:  # what the earlier runs measured is still written
            run["failed"] = f"see {log}"
            break
        rows += teacher_rows(lake, args.work, teacher, (*SHARED, *PER_TEACHER) if first else PER_TEACHER)
    wall = time.perf_counter() - started
    result = {"date": dt.date.today().isoformat(), "wall_seconds": round(wall, 1),
              "command": " ".join(["python", "benchmarks/quality.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": _machine(), "runs": runs, "rows": rows}
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    if rows:
        _chart(rows, stem.with_suffix(".png"))
        print_table(rows)
    print(f"[quality] {len(rows)} rows in {wall / 60:.1f} min: {stem.with_suffix('.json')}, {stem.with_suffix('.png')}")
    return 1 if any(run.get("failed") for run in runs) else 0


def _machine() -> dict:
    import platform

    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": os.getloadavg()}


def _chart(rows: list[dict], path: Path) -> None:
    import pandas as pd

    from mt_assets.lib.scoring.charts import bleu_bars

    table = pd.DataFrame(rows)
    sizes = ", ".join(f"{name} {int(n)}" for name, n in table.groupby("test_set", sort=False)["segments"].max().items())
    path.write_bytes(bleu_bars(table, f"Quality benchmark: {table['system'].nunique()} systems; test pairs: {sizes}"))


if __name__ == "__main__":
    raise SystemExit(main())
