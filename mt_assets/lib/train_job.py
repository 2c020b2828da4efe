"""Train one LoRA adapter in a process of its own: the entry point that the adapter assets launch
through Dagster Pipes with `accelerate launch`, and that runs the same way from a shell.

    accelerate launch --num_processes 1 --cpu -m mt_assets.lib.train_job \\
        --table data_lake/train_A.parquet --base-model data_lake/tiny_base_model \\
        --recipe recipe.json --output-dir adapters/adapter_B

With ``--multi_gpu --num_processes N`` the same command trains with DDP on N GPUs (TRL's
SFTTrainer reads the ranks that accelerate sets). Every rank trains; only rank 0 writes the adapter
and reports. Launched by Dagster Pipes, rank 0 sends its progress as log lines and the training
summary as the asset's materialization metadata; launched from a shell, it prints them.

Plain Python: `dagster_pipes` is the small, dependency-free client half of Pipes, not Dagster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

MODULE = "mt_assets.lib.train_job"
METADATA_KEYS = ("trainable_parameters", "steps", "final_train_loss", "first_train_loss", "validation_loss",
                 "wall_seconds", "weights_dtype", "mixed_precision")
"""Summary fields reported as metadata (with the training log as Markdown, the device and world size)."""


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
    elif not cuda:
        command.append("--cpu")
    return [*command, *extra_args, "-m", MODULE, *job_args]


def job_arguments(table: Path, base_model: str, recipe: Path, output_dir: Path, revision: str | None = None,
                  device: str = "auto", dtype: str = "auto", identity: dict | None = None) -> list[str]:
    """This module's own arguments, as `main` reads them."""
    arguments = ["--table", str(table), "--base-model", base_model, "--recipe", str(recipe),
                 "--output-dir", str(output_dir), "--device", device, "--dtype", dtype]
    if identity:
        arguments += ["--identity", json.dumps(identity, sort_keys=True, default=str)]
    return arguments + (["--revision", revision] if revision else [])


def rank() -> int:
    """This process's global rank under torchrun/accelerate (0 when launched alone)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_device(device: str) -> str:
    """``auto`` under DDP is this rank's own GPU (cuda:LOCAL_RANK); otherwise as lib.models picks it."""
    from mt_assets.lib.models import pick_device

    device = pick_device(device)
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def read_recipe(path: Path | None):
    """A LoraRecipe from a JSON file of its fields (missing fields keep their defaults)."""
    from mt_assets.lib.training import LoraRecipe

    if path is None:
        return LoraRecipe()
    values = json.loads(Path(path).read_text())
    known = {f.name for f in fields(LoraRecipe)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"recipe file {path}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    if values.get("target_modules") == ["all-linear"]:
        values["target_modules"] = "all-linear"  # as a profile writes it: PEFT's keyword, not a module name
    return LoraRecipe(**values)


def write_recipe(recipe, path: Path) -> Path:
    path.write_text(json.dumps(asdict(recipe), indent=2))
    return path


@dataclass
class Reporter:
    log: Callable[[str], None]
    report: Callable[[dict], None]


@contextmanager
def reporter() -> Iterator[Reporter]:
    """Dagster Pipes when this process was launched by it, else standard output."""
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        with open_dagster_pipes() as pipes:
            yield Reporter(log=pipes.log.info,
                           report=lambda metadata: pipes.report_asset_materialization(metadata=metadata))
    else:
        yield Reporter(log=lambda line: print(line, flush=True),
                       report=lambda metadata: print(json.dumps(
                           {k: v["raw_value"] if isinstance(v, dict) else v for k, v in metadata.items()
                            if k != "training_log"}, indent=2), flush=True))


def summary_metadata(result) -> dict:
    """What rank 0 reports: the summary fields, the device, world size and the log as Markdown."""
    summary = result.summary
    return {
        **{key: summary[key] for key in METADATA_KEYS},
        "resumed_from": summary.get("resumed_from") or "",
        "device": summary["device"],
        "world_size": summary["world_size"],
        "training_log": {"raw_value": result.log.to_markdown(index=False), "type": "md"},
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, required=True,
                        help="Parquet pair table to train on (pair_id, source, target, source_lang, target_lang)")
    parser.add_argument("--base-model", required=True, help="Hugging Face Hub id or local model folder")
    parser.add_argument("--revision", default=None, help="Hub revision of the base model")
    parser.add_argument("--recipe", type=Path, default=None,
                        help="JSON file of LoraRecipe fields (`mt-assets recipe` writes one); default: the seed recipe")
    parser.add_argument("--output-dir", type=Path, required=True,
                        help="where the adapter goes; a folder with checkpoints/ resumes from the last one")
    parser.add_argument("--device", default="auto", help="auto (this rank's GPU, else CPU), cpu, cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto, fp32, bf16 or fp16")
    parser.add_argument("--identity", type=json.loads, default=None,
                        help="JSON of what identifies the base model beyond its name (a revision, a weights "
                        "hash): checkpoints of another identity are not resumed")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import pandas as pd

    from mt_assets.lib.models import load_causal_lm, load_tokenizer
    from mt_assets.lib.training import train_adapter

    args = parse_args(argv)
    recipe = read_recipe(args.recipe)
    table = pd.read_parquet(args.table)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    main_process = rank() == 0
    tokenizer = load_tokenizer(args.base_model, args.revision)
    model = load_causal_lm(args.base_model, args.revision, rank_device(args.device), args.dtype, for_training=True)
    if not main_process:
        train_adapter(model, tokenizer, table, recipe, args.output_dir, identity=args.identity)
        return 0
    with reporter() as out:
        out.log(f"training on {len(table)} pairs of {args.table.name} with {world_size()} process(es), "
                f"device {next(model.parameters()).device}")
        result = train_adapter(model, tokenizer, table, recipe, args.output_dir, progress=out.log,
                               identity=args.identity)
        out.report(summary_metadata(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
