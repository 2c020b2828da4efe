"""Greedy decoding without `generate`: a preallocated KV cache, per-row stopping, finished rows dropped.

`greedy_decode` gives the tokens `model.generate(do_sample=False)` would give, row by row, for
left-padded prompts (positions count real tokens only, as in `generate`). What it saves:

- the KV cache is allocated once per batch and written in place (`generate`'s dynamic cache
  concatenates, copying the whole cache at every step);
- a row stops as soon as its stop rule fires (a table lookup per token, where `stop_strings`
  decodes text at every step), and finished rows leave the batch, so they cost nothing after;
- the LM head runs on the last position only, on a contiguous copy of it (`contiguous_head_input`,
  which lib.translation.translate.complete_lines puts around both decoders): transformers slices
  that position out as a strided view, and for a strided 3-D input PyTorch's CPU matmul (2.13)
  does not fold into one matrix product when the head's weight is frozen (PEFT freezes the base
  model): it multiplies batch by batch over the weight expanded per row, copying the whole head
  (Gemma's 262k x 640) once per sentence, about 30 s per prefill of 16 sentences on 2 cores.

Plain Python: no Dagster here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in a buffer of fixed capacity, filled in place; `keys`/`values`
    are views of the filled part, so everything that reads a dynamic layer reads this one."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        batch, heads, _, dim = key_states.shape
        self._keys = key_states.new_empty((batch, heads, self.capacity, dim))
        self._values = value_states.new_empty((batch, heads, self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} tokens for a capacity of {self.capacity}")
        self._keys[:, :, self.length:end] = key_states
        self._values[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if not self.is_initialized:
            return
        kept_keys = self._keys.new_empty((len(indices),) + self._keys.shape[1:])
        kept_values = self._values.new_empty((len(indices),) + self._values.shape[1:])
        kept_keys[:, :, :self.length] = self._keys[indices, :, :self.length]
        kept_values[:, :, :self.length] = self._values[indices, :, :self.length]
        self._keys, self._values = kept_keys, kept_values
        self.keys, self.values = self._keys[:, :, :self.length], self._values[:, :, :self.length]


def preallocated_cache(model, capacity: int) -> Cache:
    """A transformers `Cache` of `PreallocatedLayer`s, one per decoder layer of `model`."""
    layers = model.config.get_text_config().num_hidden_layers
    return Cache(layers=[PreallocatedLayer(capacity) for _ in range(layers)])


@dataclass(frozen=True)
class StopRule:
    """When a row is done, as token tables over the vocabulary (all on the model's device).

    A row stops at `eos`, or at the first newline that follows some non-blank text: the
    translation is the first non-blank line of the continuation (prompt.clean_output), so
    nothing after that newline can change it.
    """

    eos: torch.Tensor
    """bool [vocab]: the EOS token(s)."""
    has_text: torch.Tensor
    """bool [vocab]: the token holds a non-whitespace character."""
    has_newline: torch.Tensor
    """bool [vocab]: the token holds a newline."""
    newline_after_text: torch.Tensor
    """bool [vocab]: the token holds a newline after a non-whitespace character."""


_STOP_RULES: dict[tuple, StopRule] = {}


def newline_stop_rule(tokenizer, vocab_size: int, device) -> StopRule:
    """The stop rule for `tokenizer`: each token decoded once, cached per tokenizer and device.

    A tokenizer loaded from a folder is known by that folder, so the rule is built once per
    process however often the tokenizer is loaded (about 3 s for Gemma's 262k tokens).
    """
    key = (type(tokenizer).__name__, tokenizer.name_or_path or id(tokenizer), len(tokenizer),
           str(tokenizer.eos_token_id), vocab_size, str(device))
    if key not in _STOP_RULES:
        has_text = torch.zeros(vocab_size, dtype=torch.bool)
        has_newline = torch.zeros(vocab_size, dtype=torch.bool)
        after_text = torch.zeros(vocab_size, dtype=torch.bool)
        for token_id in range(min(vocab_size, len(tokenizer))):
            text = tokenizer.decode([token_id])
            stripped = text.lstrip()
            has_text[token_id] = bool(stripped)
            has_newline[token_id] = "\n" in text
            after_text[token_id] = "\n" in stripped
        eos = torch.zeros(vocab_size, dtype=torch.bool)
        eos_ids = tokenizer.eos_token_id
        for token_id in eos_ids if isinstance(eos_ids, list) else [eos_ids]:
            if token_id is not None:
                eos[token_id] = True
                has_text[token_id] = has_newline[token_id] = after_text[token_id] = False
        _STOP_RULES[key] = StopRule(eos.to(device), has_text.to(device), has_newline.to(device), after_text.to(device))
    return _STOP_RULES[key]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded input ids and their attention mask."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


@contextmanager
def contiguous_head_input(model) -> Iterator[None]:
    """`model`'s LM head reads a contiguous copy of its input while the block runs (see the module
    docstring); a model without `get_output_embeddings` is left as it is."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, torch.nn.Module):
        yield
        return
    hook = head.register_forward_pre_hook(lambda _module, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        hook.remove()


@torch.inference_mode()
def greedy_decode(model, prompts: Sequence[Sequence[int]], stop: StopRule, *, pad_id: int, max_new_tokens: int,
                  compact_fraction: float = 0.25) -> list[list[int]]:
    """Greedy continuations of tokenized prompts, decoded together as one batch.

    Each continuation ends with the token that stopped it (EOS or the newline), or after
    `max_new_tokens`. Finished rows are dropped from the batch once they are at least
    `compact_fraction` of it.
    """
    if not prompts:
        return []
    device = next(model.parameters()).device
    input_ids, prompt_mask = left_pad(prompts, pad_id, device)
    rows, width = input_ids.shape
    capacity = width + max_new_tokens
    mask = torch.zeros((rows, capacity), dtype=torch.long, device=device)
    mask[:, :width] = prompt_mask
    # As `generate`: positions count real tokens; pads get position 1 (they are masked anyway)
    positions = (prompt_mask.cumsum(-1) - 1).masked_fill(prompt_mask == 0, 1)
    cache = preallocated_cache(model, capacity)
    generated = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    lengths = torch.full((rows,), max_new_tokens, dtype=torch.long, device=device)
    alive = torch.arange(rows, device=device)  # original row of each row still in the batch
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    has_text = torch.zeros(rows, dtype=torch.bool, device=device)
    next_positions = positions[:, -1] + 1

    logits = model(input_ids=input_ids, attention_mask=prompt_mask, position_ids=positions, cache=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1]
    for step in range(max_new_tokens):
        tokens = logits.argmax(-1)
        stops = stop.eos[tokens] | torch.where(has_text, stop.has_newline[tokens], stop.newline_after_text[tokens])
        has_text |= stop.has_text[tokens]
        generated[alive, step] = torch.where(done, pad_id, tokens)
        newly = stops & ~done
        lengths[alive[newly]] = step + 1
        done |= stops
        finished = int(done.sum())
        if finished == len(alive) or step + 1 == max_new_tokens:
            break
        if finished >= max(1, compact_fraction * len(alive)):
            keep = (~done).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            alive, tokens, mask = alive[keep], tokens[keep], mask[keep]
            next_positions, has_text = next_positions[keep], has_text[keep]
            done = done[keep]
        length = width + step + 1
        mask[:, length - 1] = 1
        logits = model(input_ids=tokens[:, None], attention_mask=mask[:, :length], position_ids=next_positions[:, None],
                       cache=cache, use_cache=True).logits[:, -1]
        next_positions = next_positions + 1
    generated, lengths = generated.cpu(), lengths.cpu().tolist()
    return [generated[row, :lengths[row]].tolist() for row in range(rows)]
