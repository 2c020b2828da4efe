"""LoRA fine-tuning with TRL's SFTTrainer and PEFT: the recipe, its mapping to PEFT/TRL objects,
and one `train_adapter` used for every adapter (B, C, D)."""

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
import torch

from mt_assets.lib.lora.checkpoints import (last_checkpoint, load_final_checkpoint, mirror_callback, remove_other_runs,
                                      training_ended)
from mt_assets.lib.hashing import table_hash
from mt_assets.lib.translation.prompt import build_completion, build_prompt

LOG_FILE = "training_log.csv"
SUMMARY_FILE = "training_summary.json"
CHECKPOINTS_DIR = "checkpoints"
"""Where checkpoints go while training (by default under the output folder): one folder per run fingerprint."""
RUN_FIELDS = ("wall_seconds", "resumed_from", "mean_train_loss")
"""Summary fields that differ between runs training the same adapter (the mean loss is over the steps
this run trained, after the checkpoint it resumed): returned and reported, but
kept out of the adapter folder's training_summary.json, so a retrained identical adapter hashes the same."""


@dataclass(frozen=True)
class LoraRecipe:
    """LoRA hyperparameters. The defaults are the seed experiment's, except that `validation_fraction`
    holds a tenth of the training table out for validation loss (the seed trained on all of it)."""

    r: int = 16
    alpha: int = 64
    dropout: float = 0.1
    bias: str = "none"
    target_modules: list[str] | str | None = None
    """None: the model's attention projections (q_proj, v_proj for GPT-Neo, as PEFT maps them)."""
    modules_to_save: list[str] | None = None
    """Whole modules trained beside the adapters, e.g. ["wte"] for the tiny demo model."""
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
    """auto: bf16 on GPUs that support it, fp16 on older GPUs, bf16 on CPUs with AMX or AVX512-BF16,
    none on other CPUs; or bf16, fp16 (GPU only), no."""
    validation_fraction: float = 0.1
    """Held-out share of the adapter's own training table for validation loss (never test_A); those
    pairs are not trained on. 0: train on every pair, no validation loss."""
    eval_steps: int | None = None
    """Steps between validation losses; None: twice per epoch."""
    logging_steps: int = 5
    seed: int = 42
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory (16 GB GPUs), about a third more compute."""
    kernels: str = "fast"
    """fast: PyTorch's fused attention (SDPA) and GELU for GPT-Neo (lib.translation.kernels), eager's results
    within float rounding; eager: transformers' own."""
    token_budget: int | None = None
    """None: batches of batch_size pairs, as the seed. A number: length-bucketed batches of at most that
    many padded tokens (rows x longest row, at least max_length), reshuffled every epoch, and
    batch_size is unused. Fewer, larger steps than batch_size 4: set learning_rate and epochs for them."""
    loss_impl: str = "auto"
    """How the LM head and loss run (lib.lora.trainer): fused (TRL's chunked kernel), compact (the labelled
    rows only), or auto: fused on CUDA, compact elsewhere. The same loss either way."""

    def __post_init__(self) -> None:
        if self.kernels not in ("fast", "eager"):
            raise ValueError(f"unknown kernels {self.kernels!r} (setting training.kernels): use fast or eager")
        if self.loss_impl not in ("auto", "fused", "compact"):
            raise ValueError(f"unknown loss_impl {self.loss_impl!r} (setting training.loss_impl): use auto, fused "
                             "or compact")
        if self.token_budget is not None and self.token_budget < self.max_length:
            raise ValueError(f"token_budget {self.token_budget} is less than max_length {self.max_length} "
                             "(settings training.token_budget, training.max_length): a long pair would not fit")


def peft_config(recipe: LoraRecipe):
    """The PEFT LoraConfig for a recipe (causal LM task)."""
    from peft import LoraConfig, TaskType

    return LoraConfig(r=recipe.r, lora_alpha=recipe.alpha, lora_dropout=recipe.dropout, bias=recipe.bias,
                      target_modules=recipe.target_modules, modules_to_save=recipe.modules_to_save,
                      task_type=TaskType.CAUSAL_LM)


def precision_flags(recipe: LoraRecipe, device: str) -> dict[str, bool]:
    """TRL/transformers bf16/fp16 flags for the recipe's mixed precision on a device."""
    mode = effective_precision(recipe, device)
    return {"bf16": mode == "bf16", "fp16": mode == "fp16"}


def effective_precision(recipe: LoraRecipe, device: str) -> str:
    """"bf16", "fp16" or "no": what the recipe's `mixed_precision` means on `device`."""
    from mt_assets.lib.models.loading import cpu_has_bf16

    mode = recipe.mixed_precision
    if mode == "auto":
        if not device.startswith("cuda"):
            mode = "bf16" if device == "cpu" and cpu_has_bf16() else "no"
        else:
            mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode not in ("no", "bf16", "fp16"):
        raise ValueError(f"unknown mixed_precision {mode!r} (setting training.mixed_precision): use auto, bf16, fp16 or no")
    if mode == "fp16" and not device.startswith("cuda"):
        raise ValueError(f"mixed_precision fp16 needs a GPU; this run is on {device} (setting "
                         "training.mixed_precision): use bf16 or no")
    return mode


def sft_config(recipe: LoraRecipe, output_dir: Path, device: str, steps_per_epoch: int, has_validation: bool):
    """The TRL SFTConfig for a recipe: prompt-completion data, loss on the completion only."""
    from trl import SFTConfig

    eval_steps = recipe.eval_steps or max(1, steps_per_epoch // 2)
    return SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps,
        warmup_steps=recipe.warmup_ratio,  # a float in [0, 1) is a share of the steps
        lr_scheduler_type=recipe.lr_scheduler,
        weight_decay=recipe.weight_decay,
        max_length=recipe.max_length,
        completion_only_loss=True,
        logging_steps=recipe.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_validation else "no",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        seed=recipe.seed,
        data_seed=recipe.seed,
        report_to=[],
        disable_tqdm=True,
        activation_checkpointing=recipe.gradient_checkpointing,  # transformers 5 name (the old one warns)
        use_cpu=not device.startswith("cuda"),
        dataloader_num_workers=0,
        **precision_flags(recipe, device),
    )


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
    if writer:
        log.to_csv(output_dir / LOG_FILE, index=False)
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
        kept = {key: value for key, value in summary.items() if key not in RUN_FIELDS}
        (output_dir / SUMMARY_FILE).write_text(json.dumps(kept, indent=2))
    return TrainingResult(log=log, summary=summary)


def training_log(history: list[dict]) -> pd.DataFrame:
    """Trainer log history as a table: step, epoch, train_loss, eval_loss."""
    rows = [{"step": h.get("step"), "epoch": h.get("epoch"), "train_loss": h.get("loss"), "eval_loss": h.get("eval_loss")}
            for h in history if "loss" in h or "eval_loss" in h]
    return pd.DataFrame(rows, columns=["step", "epoch", "train_loss", "eval_loss"]).astype(
        {"train_loss": float, "eval_loss": float})


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
