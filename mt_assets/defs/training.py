"""Training assets: adapter_B, adapter_C and adapter_D from one builder, in the `gpu` pool."""

import json
import shutil
from dataclasses import fields
from pathlib import Path

import dagster as dg
import pandas as pd

from mt_assets.defs.io_manager import Folder
from mt_assets.defs.models import BaseModel
from mt_assets.lib.hashing import table_hash
from mt_assets.lib.training import (CHECKPOINTS_DIR, LOG_FILE, SUMMARY_FILE, LoraRecipe, check_prompt_fits,
                                     check_recipe_fits_model, train_adapter)

GPU_POOL = "gpu"
LINEAGE_FILE = "lineage.json"


class Training(dg.ConfigurableResource):
    """The LoRA recipe shared by every adapter (see lib.training.LoraRecipe for each field).
    Defaults are the seed recipe; profiles override what they need."""

    r: int = 16
    alpha: int = 64
    dropout: float = 0.1
    bias: str = "none"
    target_modules: list[str] | None = None
    """None: the attention projections PEFT knows for the model (q_proj, v_proj for GPT-Neo);
    [all-linear]: every linear layer but the output head."""
    modules_to_save: list[str] | None = None
    max_length: int = 256
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    epochs: float = 2.0
    max_steps: int = -1
    warmup_ratio: float = 0.0
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    mixed_precision: str = "auto"
    validation_fraction: float = 0.1
    eval_steps: int | None = None
    logging_steps: int = 5
    seed: int = 42
    gradient_checkpointing: bool = False
    staging_dir: str = "data_lake/.staging"
    """Where adapters are trained (and checkpointed, for resuming) before they enter the data lake."""

    def recipe(self) -> LoraRecipe:
        values = {f.name: getattr(self, f.name) for f in fields(LoraRecipe)}
        if values["target_modules"] == ["all-linear"]:
            values["target_modules"] = "all-linear"  # PEFT's keyword, not a module name
        return LoraRecipe(**values)


def adapter_asset(name: str, training_table: str, description: str) -> dg.AssetsDefinition:
    """An adapter asset: LoRA on `training_table` with the shared recipe."""

    @dg.asset(
        name=name,
        ins={"table": dg.AssetIn(training_table)},
        group_name="training",
        kinds={"pytorch", "peft"},
        pool=GPU_POOL,
        description=description,
    )
    def _adapter(context: dg.AssetExecutionContext, table: pd.DataFrame, base_model: BaseModel,
                 training: Training) -> Folder:
        recipe = training.recipe()
        tokenizer = base_model.load_tokenizer()
        check_prompt_fits(tokenizer, table, recipe.max_length)  # settings first
        check_recipe_fits_model(base_model.load_skeleton(), recipe)
        model = base_model.load_model(fresh=True)
        staging = Path(training.staging_dir) / name
        staging.mkdir(parents=True, exist_ok=True)
        context.log.info(f"Training {name} on {len(table)} pairs of {training_table} (r={recipe.r}, "
                         f"lr={recipe.learning_rate}, epochs={recipe.epochs})")
        result = train_adapter(model, tokenizer, table, recipe, staging, progress=context.log.info,
                               identity=base_model.reference())
        lineage = {"training_table": training_table, "training_table_hash": table_hash(table),
                   **base_model.reference()}
        (staging / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2))
        shutil.rmtree(staging / CHECKPOINTS_DIR, ignore_errors=True)
        summary = result.summary
        context.add_output_metadata({
            "trainable_parameters": summary["trainable_parameters"],
            "steps": summary["steps"],
            "final_train_loss": summary["final_train_loss"],
            "first_train_loss": summary["first_train_loss"],
            "validation_loss": summary["validation_loss"],
            "wall_seconds": summary["wall_seconds"],
            "resumed_from": summary["resumed_from"] or "",
            "training_table_hash": lineage["training_table_hash"],
            "base_model": lineage["base_model"],
            "training_log": dg.MetadataValue.md(result.log.to_markdown(index=False)),
        })
        return Folder(staging)

    return _adapter


adapter_B = adapter_asset("adapter_B", "train_A", "LoRA adapter trained on train_A (real parallel data).")
adapter_C = adapter_asset("adapter_C", "synth_B", "LoRA adapter trained on synth_B (teacher-written data only).")
adapter_D = adapter_asset("adapter_D", "combined_C", "LoRA adapter trained on combined_C (train_A + synth_B).")


def read_adapter_log(adapter: Path) -> pd.DataFrame:
    with (Path(adapter) / LOG_FILE).open() as handle:
        return pd.read_csv(handle)


def read_adapter_summary(adapter: Path) -> dict:
    return json.loads((Path(adapter) / SUMMARY_FILE).read_text())


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
