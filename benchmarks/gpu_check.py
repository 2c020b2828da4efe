"""The GPU check in one run: the fast paths' equality tests on CUDA in fp32 and bf16, then the
throughput benchmark (seed, project and t4 on GPT-Neo-1.3B's architecture; the project's settings
on Gemma 3 270M's), each stage within its share of one time budget, all results in one JSON.

    benchmarks/gpu_check.sh             # on a GPU machine (prepared by benchmarks/gpu_prepare.sh)
    benchmarks/gpu_check.sh --smoke     # on a CPU: the same stages at tiny sizes, the same JSON

Stages run as subprocesses, so a stage that fails or runs out of its time is recorded and the
next one still runs. The equality tests are lib tests (`mt_assets_tests/lib/test_kernels.py`,
`test_trainer.py`, `test_decoding.py`) loaded with their own conftest as a plugin and without
the suite's Dagster fixtures; `MT_ASSETS_TEST_DEVICE` and `MT_ASSETS_TEST_DTYPE` put them on the
device and in bf16. Writes eight files into `--out` (default $OUT, else
benchmarks/results/gpu-check): gpu_check.json (every stage's outcome, the versions, the targets
met or not), each stage's log, the benchmark's JSON files and profile.txt (one training step of
each GPT-Neo configuration, by operator).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB_TESTS = ["mt_assets_tests/lib/test_kernels.py", "mt_assets_tests/lib/test_trainer.py",
             "mt_assets_tests/lib/test_decoding.py"]
BF16_TESTS = "bf16 or completion_loss or fast_decoder_gives or fast_kernels_and_compact_loss_train"
"""The tests that take MT_ASSETS_TEST_DTYPE (the others are fp32 by design or do not run a model)."""
TARGETS = {"project_train_tokens_per_s": 60_000, "project_train_peak_gib": 40.0,
           "project_translate_new_tokens_per_s": 20_000, "t4_peak_gib": 14.0}
"""GPT-Neo-1.3B architecture, LoRA r16, Multi30k lengths, on one H100/H200."""
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "pyarrow", "triton")


def stage_plan(smoke: bool, out: Path) -> list[dict]:
    """Each stage: its name, kind, time share (seconds) and command (or pytest arguments)."""
    device = "cpu" if smoke else "cuda"
    throughput = [sys.executable, "benchmarks/throughput.py", "--device", device,
                  "--work-dir", str(out.parent / "gpu_check_work" if smoke else Path("/tmp/gpu_check_work"))]
    if smoke:  # test sizes: a few steps and sentences, the CPU's configurations
        throughput += ["--threads", "1", "--rounds", "1", "--warmup-steps", "1", "--seed-train-steps", "2",
                       "--train-steps", "2", "--train-pairs", "300", "--sentences", "6", "--max-new-tokens", "8"]
        neo = throughput + ["--configs", "seed,project"]
        gemma = throughput + ["--arch", "gemma3-tiny", "--configs", "fp32,bf16"]
        fp32_tests, bf16_tests = "logits_match or gelu", "bf16"  # no pretrained small model to build
    else:  # one H100/H200: about 2 minutes for GPT-Neo, 1 for Gemma
        throughput += ["--rounds", "1", "--warmup-steps", "5"]
        neo = throughput + ["--configs", "seed,project,t4", "--train-steps", "30", "--seed-train-steps", "20",
                            "--train-pairs", "8000", "--sentences", "1000", "--seed-sentences", "16",
                            "--max-new-tokens", "128"]
        gemma = throughput + ["--arch", "gemma3-270m", "--configs", "project", "--train-steps", "30",
                              "--train-pairs", "8000", "--sentences", "500", "--max-new-tokens", "128"]
        fp32_tests, bf16_tests = None, BF16_TESTS
    return [  # shares of the 420 s budget; a stage also gets what the stages before it left unused
        dict(name="tests_fp32", kind="tests", share=100, dtype="fp32", select=fp32_tests),
        dict(name="throughput", kind="throughput", share=180,  # and one profiled step of each configuration
             command=neo + ["--out", str(out / "throughput-gpt-neo.json"), "--profile", str(out / "profile.txt")]),
        dict(name="tests_bf16", kind="tests", share=60, dtype="bf16", select=bf16_tests),
        dict(name="gemma", kind="throughput", share=80, command=gemma + ["--out", str(out / "throughput-gemma.json")]),
    ]


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device visible to torch: run with --smoke on a CPU")
        return torch.cuda.get_device_name(0)
    return "CPU"


def run_stage(stage: dict, out: Path, device: str, seconds: float) -> dict:
    """Run one stage's subprocess for at most `seconds`; its output goes to out/<name>.log."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    junit = out.parent / f".{stage['name']}-junit.xml" if stage["kind"] == "tests" else None
    if stage["kind"] == "tests":
        env.update(MT_ASSETS_TEST_DEVICE=device, MT_ASSETS_TEST_DTYPE=stage["dtype"])
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest",
                   "-p", "mt_assets_tests.lib.conftest", f"--junitxml={junit}", *LIB_TESTS]
        if stage["select"]:
            command += ["-k", stage["select"]]
    else:
        command = stage["command"]
    log = out / f"{stage['name']}.log"
    started = time.perf_counter()
    result = {"command": " ".join(command), "log": log.name}
    with log.open("w") as handle:
        try:
            rc = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                timeout=seconds).returncode
            result.update(status="ok" if rc == 0 else "failed", rc=rc)
        except subprocess.TimeoutExpired:
            result.update(status="timeout", rc=None)
    result["seconds"] = round(time.perf_counter() - started, 1)
    if junit is not None:
        result.update(junit_results(junit))
        junit.unlink(missing_ok=True)
    elif stage["kind"] == "throughput":
        result.update(benchmark_results(Path(stage["command"][stage["command"].index("--out") + 1])))
    if result["status"] != "ok":
        result["log_tail"] = log.read_text(errors="replace")[-3000:]
    return result


def junit_results(path: Path) -> dict:
    """Counts and failures of a pytest run from its JUnit XML (zeros when pytest wrote none)."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    if not path.is_file():
        return counts
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            counts["passed"] += 1
            continue
        key = {"failure": "failed", "error": "errors", "skipped": "skipped"}[outcome.tag]
        counts[key] += 1
        if outcome.tag != "skipped":
            counts["failures"].append({"test": name, "message": (outcome.get("message") or "")[:500]})
    return counts


def benchmark_results(path: Path) -> dict:
    if not path.is_file():
        return {"summary": None, "model": None, "json": None}
    report = json.loads(path.read_text())
    return {"summary": report["summary"], "model": report["model"], "json": path.name,
            "tokens_per_training_pair": report["tokens_per_training_pair"]}


def targets(stages: dict) -> dict:
    """The GPU targets against the measured rows (None where the row is missing)."""
    summary = (stages.get("throughput") or {}).get("summary") or {}
    project, t4 = summary.get("project") or {}, summary.get("t4") or {}

    def check(value, limit, at_least):
        return {"measured": value, "target": limit,
                "met": None if value is None else (value >= limit if at_least else value <= limit)}

    t4_peak = max(t4["train_peak_gib"], t4["translate_peak_gib"] or 0) if t4 else None
    return {
        "project_train_tokens_per_s": check(project.get("train_tokens_per_s"), TARGETS["project_train_tokens_per_s"], True),
        "project_train_peak_gib": check(project.get("train_peak_gib"), TARGETS["project_train_peak_gib"], False),
        "project_translate_new_tokens_per_s": check(project.get("translate_new_tokens_per_s"),
                                                    TARGETS["project_translate_new_tokens_per_s"], True),
        "t4_peak_gib": check(t4_peak, TARGETS["t4_peak_gib"], False),
    }


def print_summary(report: dict) -> None:
    print(f"\n== GPU check ({report['mode']}) on {report['device']}, {report['date']}, {report['wall_s']} s")
    for name, stage in report["stages"].items():
        extra = ""
        if "passed" in stage:
            extra = f" passed {stage['passed']}, failed {stage['failed']}, errors {stage['errors']}"
            for failure in stage["failures"]:
                extra += f"\n    FAILED {failure['test']}: {failure['message'][:200]}"
        print(f"{name}: {stage['status']} in {stage.get('seconds')} s{extra}")
        for row_name, row in (stage.get("summary") or {}).items():
            print(f"    {row_name}: train {row['train_tokens_per_s']:,.0f} tok/s (peak {row['train_peak_gib']:.2f} GiB), "
                  f"translate {row['translate_new_tokens_per_s'] or 0:,.0f} new tok/s "
                  f"(peak {row['translate_peak_gib'] or 0:.2f} GiB)")
    for name, target in report["targets"].items():
        print(f"target {name}: measured {target['measured']}, target {target['target']}, met {target['met']}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the script, not the GPU")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks" / "results" / "gpu-check"))
    parser.add_argument("--budget", type=float, default=float(os.environ.get("GPU_CHECK_BUDGET_S", 420)),
                        help="seconds for all stages together (default 420: with the wheels' install, within 8 minutes)")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if args.smoke else "cuda"
    started = time.perf_counter()
    report = {"date": dt.date.today().isoformat(), "mode": "smoke" if args.smoke else "gpu",
              "device": device_name(device), "versions": versions(), "budget_s": args.budget, "stages": {}}
    print(f"GPU check ({report['mode']}) on {report['device']}: {report['versions']}", flush=True)
    plan = stage_plan(args.smoke, args.out)
    scale = args.budget / sum(stage["share"] for stage in plan)
    for index, stage in enumerate(plan):
        left = args.budget - (time.perf_counter() - started)
        seconds = left - scale * sum(later["share"] for later in plan[index + 1:])  # the later stages' shares stay
        if seconds < 20:
            report["stages"][stage["name"]] = {"status": "skipped", "seconds": 0, "reason": f"{left:.0f} s left"}
            continue
        print(f"-- {stage['name']} (at most {seconds:.0f} s)", flush=True)
        report["stages"][stage["name"]] = run_stage(stage, args.out, device, seconds)
        print(f"   {report['stages'][stage['name']]['status']} in {report['stages'][stage['name']]['seconds']} s", flush=True)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["targets"] = targets(report["stages"])
    report["equality_tests_pass"] = all(report["stages"].get(name, {}).get("status") == "ok"
                                        for name in ("tests_fp32", "tests_bf16"))
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print_summary(report)
    print(f"\nwritten to {args.out / 'gpu_check.json'}")
    return report


if __name__ == "__main__":
    main()
