"""Training assets: adapter_B, adapter_C and adapter_D from one builder, in the `gpu` pool.

Each adapter trains in a process of its own, lib.lora.launch, started with `accelerate launch`
through Dagster Pipes: `training.num_processes` takes the same asset from one CPU process to DDP
on several GPUs, and the training process's log lines and summary come back as the step's logs
and the asset's metadata.
"""

import os
from dataclasses import asdict, fields
from functools import partial
from pathlib import Path

import dagster as dg
import pandas as pd

from mt_assets.defs.common import GPU_POOL, GPU_TAGS, AtLeastOne, Positive, Seed
from mt_assets.defs.io_manager import DataLakeIOManager, Folder
from mt_assets.defs.models import BaseModel
from mt_assets.defs.versioning import versioned
from mt_assets.lib.hashing import table_hash
from mt_assets.lib.lora.adapter_folder import (MARKDOWN_KEYS, adapter_metadata, read_adapter_summary, write_lineage,
                                               write_loss_curve)
from mt_assets.lib.lora.checkpoints import remove_mirror, restore_checkpoints
from mt_assets.lib.lora.launch import WATCH_ENV, job_arguments, launch_command
from mt_assets.lib.lora.recipe import LoraRecipe, field_types as recipe_field_types, write_recipe
from mt_assets.lib.lora.staging import WorkFolder, checkpoint_mirror, staging_root
from mt_assets.lib.lora.train_loop import check_prompt_fits, check_recipe_fits_model



class TrainingRun(dg.ConfigurableResource):
    """Where and on how many processes adapters train; `Training` adds the recipe's settings."""

    staging_dir: str | None = None
    """Where adapters are trained (and checkpointed, for resuming) before they enter the data lake, one
    locked work folder per table, recipe and base model (lib.lora.staging). None: `.staging/` inside a local
    data lake; with the lake on object storage, a folder of the system's temporary directory, with
    each checkpoint copied to `<lake>/.staging/` as it is written and copied back on the next run."""
    num_processes: int = 1
    """Training processes `accelerate launch` starts: 1 (one GPU, or the CPU), N for DDP on N GPUs,
    0 for one per visible GPU."""
    accelerate_args: list[str] = []
    """More `accelerate launch` options, e.g. ["--gpu_ids", "0,1"] or ["--main_process_port", "29501"]."""

    def recipe(self) -> LoraRecipe:
        """The recipe of these settings; LoraRecipe checks them and turns [all-linear] into PEFT's keyword."""
        return LoraRecipe(**{f.name: getattr(self, f.name) for f in fields(LoraRecipe)})


PROFILE_TYPES = {"target_modules": list[str] | None}
"""Where a profile's type differs from the recipe's: target_modules is a list in a profile ([all-linear]
for PEFT's keyword); the recipe also takes a string (a regex), which Dagster config cannot type."""

Training = type("Training", (TrainingRun,), {
    "__module__": __name__,
    "__doc__": """The LoRA recipe shared by every adapter: one setting per field of lib.lora.recipe.LoraRecipe,
    with its type, allowed values, bounds and default, plus TrainingRun's. Defaults are the seed
    experiment's hyperparameters with one difference: `validation_fraction` (0.1) holds a seeded
    tenth of each adapter's own training table out of training for its validation loss, so adapter_B
    trains on 720 of train_A's 800 pairs (the seed trained on all). Profiles override what they need.""",
    "__annotations__": {name: PROFILE_TYPES.get(name, kind) for name, kind in recipe_field_types().items()},
    **{f.name: f.default for f in fields(LoraRecipe)},
})


def adapter_asset(name: str, training_table: str, description: str) -> dg.AssetsDefinition:
    """An adapter asset: LoRA on `training_table` with the shared recipe."""

    @dg.asset(
        name=name,
        ins={"table": dg.AssetIn(training_table)},
        group_name="training",
        kinds={"pytorch", "peft"},
        pool=GPU_POOL,
        op_tags=GPU_TAGS,
        code_version="1",
        description=description,
    )
    def _adapter(context: dg.AssetExecutionContext, table: pd.DataFrame, base_model: BaseModel,
                 training: Training, io_manager: dg.ResourceParam[DataLakeIOManager]) -> dg.Output[Folder]:
        recipe = training.recipe()
        check_prompt_fits(base_model.load_tokenizer(), table, recipe.max_length)  # settings first
        check_recipe_fits_model(base_model.load_skeleton(), recipe)
        reference = base_model.reference()  # the tiny model is built here, before training starts
        work = WorkFolder.for_work(staging_root(training.staging_dir, io_manager.base_path), name, table_hash(table),
                                   asdict(recipe), reference)
        mirror = checkpoint_mirror(io_manager.base_path, work)
        with work.locked(context.log.warning):
            table.to_parquet(work.table, index=False)
            if mirror:
                restore_checkpoints(mirror, work.checkpoints, context.log.info)
            output, run_report = work.adapter(context.run_id), work.run_report(context.run_id)
            command = launch_command(
                job_arguments(work.table, base_model.model_path(), write_recipe(recipe, work.recipe), output,
                              revision=base_model.revision, device=base_model.device, dtype=base_model.dtype,
                              identity=reference, checkpoint_dir=work.checkpoints, checkpoint_mirror=mirror,
                              run_report=run_report),
                training.num_processes, extra_args=training.accelerate_args)
            context.log.info(f"Training {name} on {len(table)} pairs of {training_table} (r={recipe.r}, "
                             f"lr={recipe.learning_rate}, epochs={recipe.epochs}) in {work.folder}: {' '.join(command)}")
            dg.PipesSubprocessClient(env=_child_env()).run(context=context, command=command)
            write_loss_curve(output, name.removeprefix("adapter_"))
            metadata = adapter_metadata(output, run_report)
            read = read_adapter_summary(output)["training_table_hash"]  # the hash of the file the trainer read
            if read != table_hash(table):
                raise RuntimeError(f"the trainer read a table other than {training_table} from {work.table} "
                                   f"(hash {read[:16]}, not {table_hash(table)[:16]}): was it changed while "
                                   "training? Materialize the asset again")
            lineage = {"training_table": training_table, "training_table_hash": read, **reference}
            write_lineage(output, lineage)
        markdown = {key: dg.MetadataValue.md(metadata[key]) for key in MARKDOWN_KEYS}
        context.add_output_metadata({**metadata, **markdown, "training_table_hash": read,
                                     "base_model": lineage["base_model"]})
        return versioned(Folder(output, stored=partial(_remove_work, work, mirror)))

    return _adapter


def _remove_work(work: WorkFolder, mirror: str | None) -> None:
    """Once the adapter is in the lake: its checkpoints and staged inputs go, unless another run of
    the same work is using them now (that run removes them when its own adapter is stored)."""
    if work.remove_if_unused() and mirror:
        remove_mirror(mirror)


def _child_env() -> dict[str, str]:
    """The training process imports this same mt_assets, installed or not, and ends with this process."""
    root = str(Path(__file__).resolve().parents[2])
    return {"PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]),
            WATCH_ENV: str(os.getpid())}


adapter_B = adapter_asset("adapter_B", "train_A", "LoRA adapter trained on train_A (real parallel data).")
adapter_C = adapter_asset("adapter_C", "synth_B", "LoRA adapter trained on synth_B (teacher-written data only).")
adapter_D = adapter_asset("adapter_D", "combined_C", "LoRA adapter trained on combined_C (train_A + synth_B).")


def loss_check(name: str) -> dg.AssetChecksDefinition:
    """The adapter's training loss went down from the first logged step to the last."""

    @dg.asset_check(asset=name, name="training_loss_decreased",
                    description="Training loss went down from the first logged step to the last.")
    def _check(adapter) -> dg.AssetCheckResult:
        summary = read_adapter_summary(adapter)
        first, final = summary["first_train_loss"], summary["final_train_loss"]
        return dg.AssetCheckResult(
            passed=bool(first is not None and final is not None and final < first),
            metadata={"first_train_loss": first, "final_train_loss": final,
                      "validation_loss": summary["validation_loss"]},
        )

    return _check


training_assets = [adapter_B, adapter_C, adapter_D]
training_checks = [loss_check(name) for name in ("adapter_B", "adapter_C", "adapter_D")]
