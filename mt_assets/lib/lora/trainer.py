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
  runs inside the wrapped model's forward.

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
            outputs = model(**forward, use_cache=False, output_hidden_states=True, logits_to_keep=1)
            softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
            with self.accelerator.autocast():  # the LM head in the forward's precision (bf16 mixed precision)
                loss, stats = completion_loss(outputs.hidden_states[-1], inputs["labels"],
                                              model.get_output_embeddings(), num_items_in_batch, softcap)
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
