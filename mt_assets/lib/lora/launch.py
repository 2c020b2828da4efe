"""Train one LoRA adapter in a process of its own: the entry point that the adapter assets launch
through Dagster Pipes with `accelerate launch`, and that runs the same way from a shell.

    accelerate launch --num_processes 1 --cpu -m mt_assets.lib.lora.launch \\
        --table data_lake/train_A.parquet --base-model data_lake/tiny_base_model \\
        --recipe recipe.json --output-dir adapters/adapter_B

With ``--multi_gpu --num_processes N`` the same command trains with DDP on N GPUs (TRL's
SFTTrainer reads the ranks that accelerate sets). Every rank trains; only rank 0 writes the adapter
and reports. Launched by Dagster Pipes, rank 0 sends its progress as log lines; the asset takes its
metadata from the files rank 0 wrote (lib.lora.adapter_folder), not from a message that a reader could cut
off. Launched from a shell, it prints them. The process ends when the process that launched the run
ends (`die_with_parent`), so a killed run leaves no trainer writing into its folder.

Plain Python: `dagster_pipes` is the small, dependency-free client half of Pipes, not Dagster.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, redirect_stdout
from functools import partial
from pathlib import Path

MODULE = "mt_assets.lib.lora.launch"
WATCH_ENV = "MT_ASSETS_WATCH_PID"
"""The process id of the process that launched the run (the Dagster step): the trainer ends with it."""


def launch_command(job_args: Sequence[str], num_processes: int = 1, cuda: bool | None = None,
                   extra_args: Sequence[str] = ()) -> list[str]:
    """The `accelerate launch` command line that runs this module with `job_args`.

    `num_processes` 1 is one process (``--cpu`` without CUDA); more is DDP (``--multi_gpu``, which
    accelerate runs through torchrun, with the gloo backend where there is no GPU); 0 is one process
    per visible GPU. `extra_args` go to accelerate as they are (e.g. ``--gpu_ids 0,1``).
    """
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if num_processes < 0:
        raise ValueError(f"num_processes must be 0 (one per GPU) or more (setting training.num_processes), "
                         f"got {num_processes}")
    if num_processes == 0:
        import torch

        num_processes = max(1, torch.cuda.device_count()) if cuda else 1
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1:
        command.append("--multi_gpu")
    elif not cuda:  # the threads accelerate picks itself, given so that it prints no notice about them
        command += ["--cpu", "--num_cpu_threads_per_process", cpu_threads()]
    return [*command, *extra_args, "-m", MODULE, *job_args]


def cpu_threads() -> str:
    """OMP_NUM_THREADS, else one thread per physical core: what `accelerate launch --cpu` chooses."""
    import psutil

    return os.environ.get("OMP_NUM_THREADS") or str(max(1, psutil.cpu_count(logical=False) or 1))


def job_arguments(table: Path, base_model: str, recipe: Path, output_dir: Path, revision: str | None = None,
                  device: str = "auto", dtype: str = "auto", identity: dict | None = None,
                  checkpoint_dir: Path | None = None, checkpoint_mirror: str | None = None,
                  run_report: Path | None = None) -> list[str]:
    """This module's own arguments, as `main` reads them."""
    arguments = ["--table", str(table), "--base-model", base_model, "--recipe", str(recipe),
                 "--output-dir", str(output_dir), "--device", device, "--dtype", dtype]
    if identity:
        arguments += ["--identity", json.dumps(identity, sort_keys=True, default=str)]
    optional = {"--revision": revision, "--checkpoint-dir": checkpoint_dir, "--checkpoint-mirror": checkpoint_mirror,
                "--run-report": run_report}
    return arguments + [item for flag, value in optional.items() if value for item in (flag, str(value))]


def rank() -> int:
    """This process's global rank under torchrun/accelerate (0 when launched alone)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_device(device: str) -> str:
    """``auto`` under DDP is this rank's own GPU (cuda:LOCAL_RANK); otherwise as lib.models.loading picks it."""
    from mt_assets.lib.models.loading import pick_device

    device = pick_device(device)
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def die_with_parent(poll_s: float = 0.5) -> None:
    """End this process when its parent ends (Linux: the kernel sends SIGKILL, PR_SET_PDEATHSIG), and
    when the process named by $MT_ASSETS_WATCH_PID ends: `accelerate launch` stands between the
    Dagster step and this process, so its parent dying is not enough."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    watched = os.environ.get(WATCH_ENV)
    if not watched:
        return
    pid = int(watched)
    started = _start_time(pid)

    def watch() -> None:
        while _start_time(pid) == started and _running(pid):
            time.sleep(poll_s)
        os._exit(1)  # the run that launched this training is gone: nobody takes its adapter

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux), so a reused process id is not taken for it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def progress_log() -> Iterator[Callable[[str], None]]:
    """Dagster Pipes' log when this process was launched by it, else standard output."""
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        with open_dagster_pipes() as pipes:
            yield pipes.log.info
    else:
        yield lambda line: print(line, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, required=True,
                        help="Parquet pair table to train on (pair_id, source, target, source_lang, target_lang)")
    parser.add_argument("--base-model", required=True, help="Hugging Face Hub id or local model folder")
    parser.add_argument("--revision", default=None, help="Hub revision of the base model")
    parser.add_argument("--recipe", type=Path, default=None,
                        help="JSON file of LoraRecipe fields (`mt-assets recipe` writes one); default: LoraRecipe's defaults")
    parser.add_argument("--output-dir", type=Path, required=True,
                        help="where the adapter goes; a folder with checkpoints/ resumes from the last one")
    parser.add_argument("--device", default="auto", help="auto (this rank's GPU, else CPU), cpu, cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto, fp32, bf16 or fp16")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="where checkpoints go (default: checkpoints/ in the output folder)")
    parser.add_argument("--checkpoint-mirror", default=None,
                        help="a folder or URL (s3://...) that gets a copy of each checkpoint as it is written")
    parser.add_argument("--run-report", type=Path, default=None,
                        help="a JSON file for what differs between runs of the same training (wall time, the "
                        "checkpoint resumed), kept out of the adapter folder")
    parser.add_argument("--identity", type=json.loads, default=None,
                        help="JSON of what identifies the base model beyond its name (a revision, a weights "
                        "hash): checkpoints of another identity are not resumed")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import pandas as pd

    from dagster_pipes import PipesEnvVarParamsLoader

    from mt_assets.lib.lora.adapter_folder import MARKDOWN_KEYS, RUN_FIELDS, adapter_metadata
    from mt_assets.lib.lora.recipe import read_recipe
    from mt_assets.lib.lora.train_loop import train_adapter
    from mt_assets.lib.models.loading import load_causal_lm, load_tokenizer
    from mt_assets.lib.quiet import QUIET_ENV, quiet_libraries

    args = parse_args(argv)
    quiet = os.environ.get(QUIET_ENV) == "1" and PipesEnvVarParamsLoader().is_dagster_pipes_process()
    if quiet:
        quiet_libraries()
    die_with_parent()
    recipe = read_recipe(args.recipe)
    table = pd.read_parquet(args.table)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(args.base_model, args.revision)
    model = load_causal_lm(args.base_model, args.revision, rank_device(args.device), args.dtype,
                           for_training=True)
    train = partial(train_adapter, model, tokenizer, table, recipe, args.output_dir, identity=args.identity,
                    checkpoint_dir=args.checkpoint_dir, checkpoint_mirror=args.checkpoint_mirror)
    if rank() != 0:
        train()
        return 0
    with progress_log() as log:
        log(f"training on {len(table)} pairs of {args.table.name} with {world_size()} process(es), "
            f"device {next(model.parameters()).device}")
        # quiet: the Trainer's own print of each log entry is not shown; `log` sends the same entry
        # through Pipes, and training_log.csv in the adapter holds them all
        with open(os.devnull, "w") as devnull, redirect_stdout(devnull) if quiet else nullcontext():
            result = train(progress=log)
        run = {key: result.summary[key] for key in RUN_FIELDS}
        if args.run_report:
            args.run_report.write_text(json.dumps(run, indent=2))
        elif not PipesEnvVarParamsLoader().is_dagster_pipes_process():
            metadata = adapter_metadata(args.output_dir)
            print(json.dumps({**{k: v for k, v in metadata.items() if k not in MARKDOWN_KEYS}, **run}, indent=2),
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
