"""The LoRA recipe, defined once: its fields with their defaults and allowed values, their checks,
its JSON form (the file that lib.lora.launch reads), and its mapping to PEFT's LoraConfig and TRL's
SFTConfig. The Dagster resource (defs/training.py `Training`) takes its settings from these fields;
a field's annotation (a `Literal` of allowed values, `annotated_types` bounds) is its one rule,
checked here for every recipe and read by the resource's config schema for profiles."""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Annotated, Literal, get_args, get_origin, get_type_hints

from annotated_types import Ge, Gt, Le

from mt_assets.lib.translation.kernels import KERNELS

ALL_LINEAR = "all-linear"
"""PEFT's keyword for every linear layer but the output head; a profile writes it as [all-linear]."""
LOSS_IMPLS = ("auto", "fused", "compact")
AtLeastOne = Annotated[int, Ge(1)]
Positive = Annotated[float, Gt(0)]
Seed = Annotated[int, Ge(0), Le(2**32 - 1)]
"""A seed every generator takes (numpy's and torch's refuse negative ones)."""
BOUNDS = {Ge: ("ge", "at least", operator.ge), Gt: ("gt", "more than", operator.gt), Le: ("le", "at most", operator.le)}


@dataclass(frozen=True)
class LoraRecipe:
    """LoRA hyperparameters. The defaults are the seed experiment's, except that `validation_fraction`
    holds a tenth of the training table out for validation loss (the seed trained on all of it)."""

    r: int = 16
    alpha: int = 64
    dropout: float = 0.1
    bias: str = "none"
    target_modules: list[str] | str | None = None
    """None: the model's attention projections (q_proj, v_proj for GPT-Neo, as PEFT maps them);
    [all-linear] or "all-linear": every linear layer but the output head; a string: a regex of module names."""
    modules_to_save: list[str] | None = None
    """Whole modules trained beside the adapters, e.g. ["wte"] for the tiny demo model."""
    max_length: int = 256
    batch_size: AtLeastOne = 4
    gradient_accumulation_steps: AtLeastOne = 1
    learning_rate: float = 1e-4
    epochs: Positive = 2.0
    max_steps: int = -1
    warmup_ratio: float = 0.0
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = "auto"
    """auto: bf16 on GPUs that support it, fp16 on older GPUs, bf16 on CPUs with AMX or AVX512-BF16,
    none on other CPUs; or bf16, fp16 (GPU only), no."""
    validation_fraction: float = 0.1
    """Held-out share of the adapter's own training table for validation loss (never test_A); those
    pairs are not trained on. 0: train on every pair, no validation loss."""
    eval_steps: int | None = None
    """Steps between validation losses; None: twice per epoch."""
    logging_steps: int = 5
    seed: Seed = 42
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory (16 GB GPUs), about a third more compute."""
    kernels: Literal[KERNELS] = "fast"
    """fast: PyTorch's fused attention (SDPA) for GPT-Neo (lib.translation.kernels), eager's results within
    float rounding; eager: transformers' own. GPT-Neo's GELU is fused at load either way (lib.models.loading)."""
    token_budget: int | None = None
    """None: batches of batch_size pairs, as the seed. A number: length-bucketed batches of at most that
    many padded tokens (rows x longest row, at least max_length), reshuffled every epoch, and
    batch_size is unused. Fewer, larger steps than batch_size 4: set learning_rate and epochs for them."""
    loss_impl: Literal[LOSS_IMPLS] = "auto"
    """How the LM head and loss run (lib.lora.trainer): fused (TRL's chunked kernel), compact (the labelled
    rows only), or auto: fused on CUDA, compact elsewhere. The same loss either way."""

    def __post_init__(self) -> None:
        if self.target_modules == [ALL_LINEAR]:
            object.__setattr__(self, "target_modules", ALL_LINEAR)  # PEFT's keyword, not a module name
        for name, annotation in field_types().items():
            _check_setting(name, getattr(self, name), annotation)
        if self.token_budget is not None and self.token_budget < self.max_length:
            raise ValueError(f"token_budget {self.token_budget} is less than max_length {self.max_length} "
                             "(settings training.token_budget, training.max_length): a long pair would not fit")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str, origin: str = "recipe") -> LoraRecipe:
        """A recipe from the JSON of its fields (missing fields keep their defaults); unknown fields are
        refused naming `origin` (e.g. the file)."""
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{origin}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)


@cache
def field_types() -> dict[str, object]:
    """Each recipe field's annotation, with its allowed values or bounds (`Annotated` extras kept)."""
    return get_type_hints(LoraRecipe, include_extras=True)


def _check_setting(name: str, value, annotation) -> None:
    """Refuse a value outside the field's `Literal` or its `Ge`/`Gt`/`Le` bounds, naming the setting."""
    if get_origin(annotation) is Literal and value not in get_args(annotation):
        *first, last = get_args(annotation)
        raise ValueError(f"unknown {name} {value!r} (setting training.{name}): use {', '.join(first)} or {last}")
    if get_origin(annotation) is not Annotated:
        return
    for bound in get_args(annotation)[1:]:
        attribute, rule, holds = BOUNDS[type(bound)]
        limit = getattr(bound, attribute)
        if not holds(value, limit):
            raise ValueError(f"setting training.{name} is {value!r}: it must be {rule} {limit}")


def read_recipe(path: Path | None) -> LoraRecipe:
    """A recipe from a JSON file of its fields; the defaults without one."""
    return LoraRecipe() if path is None else LoraRecipe.from_json(Path(path).read_text(), f"recipe file {path}")


def write_recipe(recipe: LoraRecipe, path: Path) -> Path:
    path.write_text(recipe.to_json())
    return path


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
    import torch

    from mt_assets.lib.models.loading import cpu_has_bf16

    mode = recipe.mixed_precision
    if mode == "auto":
        if not device.startswith("cuda"):
            mode = "bf16" if device == "cpu" and cpu_has_bf16() else "no"
        else:
            mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
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
