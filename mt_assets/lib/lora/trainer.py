"""TRL's SFTTrainer with two speed-ups that keep its results: token-budget batches and a loss that
runs the LM head on the labelled rows only.

- Token-budget batches (lib.translation.batching): the same collator, so the same padding, attention masks
  and completion-only labels, on length-bucketed batches of at most `token_budget` padded tokens.
- Loss (`loss_impl`): TRL 1.16 computes the loss with a fused, chunked LM head that never
  materialises the full-vocabulary logits ("fused"). Where Triton runs it (CUDA), it scores only
  the labelled positions; elsewhere (CPU) it scores every position, prompt and padding included,
  and folds each tile with several passes of torch ops, which is most of a CPU step. "compact"
  runs the LM head on the labelled positions only (the translation, a third of the tokens) with
  plain cross-entropy: the same loss, token accuracy and entropy, from fewer rows. "auto" picks
  "fused" on CUDA with Triton and "compact" elsewhere; under DDP the loss is always TRL's, which
  runs inside the wrapped model's forward. Its hidden states come from the model's decoder, so
  the model's own LM head never runs (it would score the last position only, for nothing), and
  a frozen head under mixed precision is cast to the autocast dtype once (`loss_head`), not at
  every call: autocast keeps its casts only for weights that need a gradient, and a frozen
  Gemma 3 head is 262k x 640 (335 MB in bf16, two casts a step before).

Plain Python: no Dagster here.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def resolve_loss_impl(loss_impl: str, device: str) -> str:
    """"fused" or "compact" for a recipe's `loss_impl` (one of lib.lora.recipe.LOSS_IMPLS, checked
    there) on `device`."""
    if loss_impl != "auto":
        return loss_impl
    from transformers.utils import is_triton_available

    return "fused" if device.startswith("cuda") and is_triton_available() else "compact"


def completion_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module,
                    num_items_in_batch: int | torch.Tensor | None = None,
                    softcap: float | None = None) -> tuple[torch.Tensor, dict]:
    """Next-token cross-entropy summed over labelled positions (labels != -100), divided by
    `num_items_in_batch` (by their count when None), as transformers' and TRL's causal LM loss.

    `hidden` is the last hidden state (batch, length, width); the LM head runs on the labelled
    rows only, and `softcap` (the model's `final_logit_softcapping`, as Gemma 2 has) squashes its
    logits as the model's own forward does. Also returns, without gradient, the labelled-token count, the entropy sum and the
    count of labels that are the argmax (for TRL's entropy and mean_token_accuracy).
    """
    targets = labels[:, 1:]
    mask = targets != -100
    rows = hidden[:, :-1][mask]
    wanted = targets[mask]
    weight = getattr(lm_head, "weight", None)
    if weight is not None and not torch.is_autocast_enabled(rows.device.type):
        rows = rows.to(weight.dtype)  # bf16 weights: the last hidden state may come out in fp32
    logits = lm_head(rows).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    log_probs = logits.log_softmax(-1)
    total = F.nll_loss(log_probs, wanted, reduction="sum")
    count = mask.sum()
    loss = total / (count.clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
    with torch.no_grad():
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        stats = {"tokens": count, "entropy_sum": entropy.sum(), "correct": (log_probs.argmax(-1) == wanted).sum()}
    return loss, stats


class FrozenHead(torch.nn.Module):
    """A frozen linear LM head with its weight (and bias) cast once to `dtype`; `key` says which
    weight, version and dtype it was cast from."""

    def __init__(self, head: torch.nn.Linear, dtype: torch.dtype):
        super().__init__()
        self.key = head_key(head, dtype)
        self.weight = head.weight.detach().to(dtype)
        self.bias = None if head.bias is None else head.bias.detach().to(dtype)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return F.linear(rows.to(self.weight.dtype), self.weight, self.bias)


def head_key(head: torch.nn.Linear, dtype: torch.dtype) -> tuple:
    return head.weight.data_ptr(), head.weight._version, dtype


def loss_head(head: torch.nn.Module, mixed_precision: str, cached: torch.nn.Module | None = None) -> torch.nn.Module:
    """The module `completion_loss` should run as the LM head: `cached`, or a new FrozenHead, where
    `head` is a plain linear layer that needs no gradient and `mixed_precision` ("bf16", "fp16";
    accelerate's setting) would cast it at every call; `head` itself otherwise (trained or LoRA-wrapped
    heads, full precision, weights already in that dtype)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(mixed_precision))
    if dtype is None or type(head) is not torch.nn.Linear or head.weight.requires_grad or head.weight.dtype == dtype:
        return head
    if isinstance(cached, FrozenHead) and cached.key == head_key(head, dtype):
        return cached
    return FrozenHead(head, dtype)


def decoder_of(model) -> torch.nn.Module | None:
    """The decoder stack under a (PEFT-wrapped) causal LM, whose `last_hidden_state` is the input of
    its LM head; None where the model has no separate one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    return decoder if isinstance(decoder, torch.nn.Module) and decoder is not base else None


def lora_sft_trainer_class():
    """The SFTTrainer subclass (TRL is imported on first use)."""
    from torch.utils.data import DataLoader
    from trl import SFTTrainer

    from mt_assets.lib.translation.batching import TokenBudgetBatchSampler

    class LoraSFTTrainer(SFTTrainer):
        """SFTTrainer with `token_budget` (None: TRL's batches of batch_size) and `loss_impl`
        ("fused": TRL's; "compact": `completion_loss`), set after construction."""

        token_budget: int | None = None
        loss_impl: str = "fused"
        _loss_head: torch.nn.Module | None = None

        def _budget_loader(self, dataset, description: str, shuffle: bool):
            dataset = self._remove_unused_columns(dataset, description=description)
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            sampler = TokenBudgetBatchSampler([len(ids) for ids in dataset["input_ids"]], self.token_budget,
                                              shuffle=shuffle, seed=seed)
            return self.accelerator.prepare(DataLoader(dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                                                       num_workers=self.args.dataloader_num_workers,
                                                       pin_memory=self.args.dataloader_pin_memory))

        def get_train_dataloader(self):
            if self.token_budget is None:
                return super().get_train_dataloader()
            return self._budget_loader(self.train_dataset, "Training", shuffle=True)

        def get_eval_dataloader(self, eval_dataset=None):
            if self.token_budget is None:
                return super().get_eval_dataloader(eval_dataset)
            if eval_dataset is None or isinstance(eval_dataset, str):
                eval_dataset = self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str) else self.eval_dataset
            return self._budget_loader(eval_dataset, "Evaluation", shuffle=False)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            plain = (self.args.loss_type == "nll" and self.label_smoother is None and self.compute_loss_func is None
                     and not self.aux_loss_enabled and not return_outputs)
            # Under DDP the LM head must run inside the wrapped forward: TRL's fused head does
            wrapped = self.accelerator.unwrap_model(model) is not model
            if self.loss_impl != "compact" or not plain or wrapped:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            forward = {k: v for k, v in inputs.items() if k != "labels"}
            decoder = decoder_of(model)
            with self.accelerator.autocast():  # as the prepared model's forward runs (bf16 mixed precision)
                if decoder is not None:
                    hidden = decoder(**forward, use_cache=False).last_hidden_state
                else:
                    hidden = model(**forward, use_cache=False, output_hidden_states=True,
                                   logits_to_keep=1).hidden_states[-1]
                self._loss_head = loss_head(model.get_output_embeddings(), self.accelerator.mixed_precision,
                                            self._loss_head)
                softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
                loss, stats = completion_loss(hidden, inputs["labels"], self._loss_head, num_items_in_batch, softcap)
            # The bookkeeping of SFTTrainer.compute_loss, from the same numbers
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            gather = self.accelerator.gather_for_metrics
            valid = gather(stats["tokens"]).sum()
            entropy, correct = gather(stats["entropy_sum"]).sum(), gather(stats["correct"]).sum()
            self._metrics[mode]["entropy"].append((entropy / valid).item() if valid > 0 else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
            if mode == "train":
                self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item() // self._tp_size
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return LoraSFTTrainer
