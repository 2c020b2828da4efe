"""The LoRA training loop: one `train_adapter` used for every adapter (B, C, D), with TRL's SFTTrainer
and PEFT set up from the recipe (lib.lora.recipe), the checks that run before it trains, and the
files it leaves in the adapter folder (lib.lora.adapter_folder)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from mt_assets.lib.hashing import table_hash
from mt_assets.lib.lora.adapter_folder import training_log, write_training_files
from mt_assets.lib.lora.checkpoints import (last_checkpoint, load_final_checkpoint, mirror_callback, remove_other_runs,
                                            training_ended)
from mt_assets.lib.lora.recipe import LoraRecipe, effective_precision, peft_config, sft_config
from mt_assets.lib.translation.prompt import build_completion, build_prompt

CHECKPOINTS_DIR = "checkpoints"
"""Where checkpoints go while training (by default under the output folder): one folder per run fingerprint."""


def to_prompt_completion(table: pd.DataFrame) -> list[dict[str, str]]:
    """Training examples in TRL's prompt-completion form, with the one prompt format."""
    return [{"prompt": build_prompt(s, sl, tl), "completion": build_completion(t)}
            for s, t, sl, tl in zip(table["source"], table["target"], table["source_lang"], table["target_lang"])]


def split_validation(table: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded held-out slice of the training table itself (empty when fraction is 0)."""
    if fraction <= 0 or len(table) < 4:
        return table, table.iloc[0:0]
    validation = table.sample(n=max(1, round(len(table) * fraction)), random_state=seed)
    return table.drop(validation.index), validation


@dataclass
class TrainingResult:
    log: pd.DataFrame
    """One row per logged step: step, epoch, train_loss, eval_loss."""
    summary: dict = field(default_factory=dict)


def check_prompt_fits(tokenizer, table: pd.DataFrame, max_length: int) -> None:
    """Fail before training when a prompt alone does not fit in max_length tokens (its pair would
    train on nothing: the completion is cut off). Every prompt is measured, in tokens."""
    prompts = [build_prompt(s, sl, tl) for s, sl, tl in zip(table["source"], table["source_lang"], table["target_lang"])]
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    too_long = [i for i, n in enumerate(lengths) if n >= max_length]
    if too_long:
        worst = max(too_long, key=lambda i: lengths[i])
        raise ValueError(
            f"{len(too_long)} of {len(table)} prompts do not fit in max_length {max_length} tokens (setting "
            f"training.max_length); the longest (pair {table['pair_id'].iloc[worst]}) has {lengths[worst]} tokens "
            "before its translation starts. Raise training.max_length or filter long sentences out"
        )


def check_recipe_fits_model(model, recipe: LoraRecipe) -> None:
    """Fail before training when the recipe names modules the model lacks, or more positions than it has.

    PEFT alone is lenient: a `target_modules` entry missing beside others that match, and any
    missing `modules_to_save` entry, are ignored without a word, and a too long max_length fails
    only when a long enough batch comes, mid-training.
    """
    from torch import nn

    names = [name for name, _ in model.named_modules() if name]
    layers = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                     if name and (isinstance(module, (nn.Linear, nn.Embedding)) or type(module).__name__ == "Conv1D")})
    model_name = f"{type(model).__name__} ({getattr(model, 'name_or_path', '') or 'base model'})"

    def found(key: str) -> bool:
        return any(name == key or name.endswith(f".{key}") for name in names)

    targets = recipe.target_modules
    if targets is None:
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

        model_type = getattr(model.config, "model_type", None)
        if model_type not in defaults:
            raise ValueError(f"PEFT knows no default LoRA target modules for model type {model_type!r}: set "
                             f"setting training.target_modules to some of {layers} or to [all-linear]")
    elif isinstance(targets, str):
        if targets != "all-linear" and not any(re.fullmatch(targets, name) for name in names):
            raise ValueError(f"setting training.target_modules {targets!r} matches no module of {model_name}; "
                             f"its layers are named {layers}")
    else:
        missing = [t for t in targets if not found(t)]
        if missing:
            raise ValueError(f"setting training.target_modules names {missing}, not in {model_name}: its layers "
                             f"are named {layers}. Fix the names or use [all-linear]")
    unsaved = [m for m in recipe.modules_to_save or [] if not found(m)]
    if unsaved:
        raise ValueError(f"setting training.modules_to_save names {unsaved}, not in {model_name}: its layers are "
                         f"named {layers}")
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if positions and recipe.max_length > positions:
        raise ValueError(f"setting training.max_length {recipe.max_length} is more than the {positions} positions "
                         f"{model_name} has: lower training.max_length to at most {positions}")


def run_fingerprint(model, table: pd.DataFrame, recipe: LoraRecipe, identity: dict | None = None) -> str:
    """What checkpoints must come from to be resumed: the table, the recipe and the base model
    (its name, plus `identity`, e.g. a revision or weights hash). SHA-256 hex digest."""
    payload = {"table": table_hash(table), "recipe": asdict(recipe),
               "base_model": str(getattr(model, "name_or_path", "")), "identity": identity or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def train_adapter(model, tokenizer, table: pd.DataFrame, recipe: LoraRecipe, output_dir: Path,
                  progress: Callable[[str], None] | None = None, identity: dict | None = None,
                  callbacks: Sequence = (), checkpoint_dir: Path | None = None,
                  checkpoint_mirror: str | None = None) -> TrainingResult:
    """Fine-tune LoRA adapters on a pair table and save them (PEFT format) into `output_dir`.

    `model` is a freshly loaded base model; it is wrapped in place. Checkpoints go to
    `output_dir/checkpoints/<run>` while training (`<run>`: the start of `run_fingerprint`, so
    checkpoints of another table, recipe or base model are never resumed, and are removed); a run
    started again on the same folder resumes from the last complete one. `identity` adds to the
    fingerprint what the model's name does not tell (revision, weights hash). Launched on several
    processes (DDP, see lib.lora.launch), every rank trains and returns the result; only rank 0 writes files.
    `callbacks`: more transformers TrainerCallbacks (e.g. a throughput probe). `checkpoint_dir`
    replaces `output_dir/checkpoints`; `checkpoint_mirror` (a universal-pathlib location, e.g. on the
    data lake) gets a copy of each checkpoint as it is written (lib.lora.checkpoints).
    The summary records the hash of the table trained on (`training_table_hash`); the folder's
    training_summary.json holds it without the RUN_FIELDS.
    """
    from datasets import Dataset
    from transformers import TrainerCallback

    from mt_assets.lib.translation.kernels import set_kernels
    from mt_assets.lib.lora.trainer import lora_sft_trainer_class, resolve_loss_impl

    check_prompt_fits(tokenizer, table, recipe.max_length)
    check_recipe_fits_model(model, recipe)
    set_kernels(model, recipe.kernels)
    train, validation = split_validation(table, recipe.validation_fraction, recipe.seed)
    device = str(next(model.parameters()).device)
    steps_per_epoch = _steps_per_epoch(tokenizer, train, recipe)
    checkpoints = (checkpoint_dir or output_dir / CHECKPOINTS_DIR) / run_fingerprint(model, table, recipe, identity)[:16]
    if checkpoint_mirror:
        callbacks = [*callbacks, mirror_callback(checkpoints, checkpoint_mirror)]
    config = sft_config(recipe, checkpoints, device, steps_per_epoch, has_validation=len(validation) > 0)
    train_tokenizer = _right_padding(tokenizer)

    class Report(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if progress and logs:
                shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in logs.items()}
                progress(f"step {state.global_step}/{state.max_steps}: {shown}")

    trainer = lora_sft_trainer_class()(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(to_prompt_completion(train)),
        eval_dataset=Dataset.from_list(to_prompt_completion(validation)) if len(validation) else None,
        processing_class=train_tokenizer,
        peft_config=peft_config(recipe),
        callbacks=[Report(), *callbacks],
    )
    trainer.token_budget = recipe.token_budget
    trainer.loss_impl = resolve_loss_impl(recipe.loss_impl, device)
    if trainer.is_world_process_zero():
        remove_other_runs(checkpoints, progress)
    resume = last_checkpoint(checkpoints)
    if resume and progress:
        progress(f"resuming from {resume}")
    started = time.perf_counter()
    if resume and training_ended(resume):  # transformers would train one step past the end: the checkpoint is it
        load_final_checkpoint(trainer, resume)
        mean_loss = None
    else:
        mean_loss = float(trainer.train(resume_from_checkpoint=str(resume) if resume else None).training_loss)
    wall = time.perf_counter() - started
    writer = trainer.is_world_process_zero()  # under DDP every rank trains; rank 0 alone writes
    if writer:
        trainer.model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    log = training_log(trainer.state.log_history)
    trainable, total = _count_parameters(trainer.model)
    evals = log.dropna(subset=["eval_loss"])
    trains = log.dropna(subset=["train_loss"])
    summary = {
        "training_table_hash": table_hash(table),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0),
        "train_pairs": len(train),
        "validation_pairs": len(validation),
        "first_train_loss": float(trains["train_loss"].iloc[0]) if len(trains) else None,
        "final_train_loss": float(trains["train_loss"].iloc[-1]) if len(trains) else None,
        "mean_train_loss": mean_loss,
        "validation_loss": float(evals["eval_loss"].iloc[-1]) if len(evals) else None,
        "wall_seconds": round(wall, 2),
        "resumed_from": resume.name if resume else None,
        "device": device,
        "weights_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "mixed_precision": effective_precision(recipe, device),
        "world_size": int(trainer.args.world_size),
        "recipe": asdict(recipe),
    }
    if writer:
        write_training_files(output_dir, log, summary)
    return TrainingResult(log=log, summary=summary)


def _steps_per_epoch(tokenizer, train: pd.DataFrame, recipe: LoraRecipe) -> int:
    """Optimizer steps per epoch: from the pair count, or with a token budget from the token lengths."""
    if recipe.token_budget is None:
        return math.ceil(len(train) / (recipe.batch_size * recipe.gradient_accumulation_steps))
    from mt_assets.lib.translation.batching import token_budget_batches

    examples = to_prompt_completion(train)
    prompts = tokenizer([e["prompt"] for e in examples])["input_ids"]
    completions = tokenizer([e["completion"] for e in examples])["input_ids"]
    lengths = [min(len(p) + len(c) + 1, recipe.max_length) for p, c in zip(prompts, completions)]  # + EOS
    return math.ceil(len(token_budget_batches(lengths, recipe.token_budget)) / recipe.gradient_accumulation_steps)


def _right_padding(tokenizer):
    """Training pads on the right (generation pads on the left): a copy with that setting."""
    import copy

    train_tokenizer = copy.copy(tokenizer)
    train_tokenizer.padding_side = "right"
    return train_tokenizer


def _count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
