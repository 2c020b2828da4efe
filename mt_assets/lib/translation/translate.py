"""Batched greedy translation with a causal LM: left padding, per-row stop at end of line or EOS.

Two decoders give the same translations. ``fast`` (the default) runs lib.translation.decoding's greedy loop:
prompts sorted by token length, a preallocated KV cache, rows that leave the batch when done, and
batches sized by a token budget when one is set. ``generate`` is the reference: transformers'
`generate` with `stop_strings`, in batches of `batch_size` sentences.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mt_assets.lib.translation.prompt import build_fewshot_prompt, clean_output

DECODERS = ("fast", "generate")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
"""What PEFT reads from an adapter folder: its config and one weights file."""


def check_adapter_folder(folder: Path, name: str) -> None:
    """Fail, naming the file and the fix, unless `folder` holds a readable adapter config and a
    non-empty weights file (PEFT's own errors name neither). `name`: the adapter asset, or the
    folder's path when the adapter was given as a folder."""
    folder = Path(folder)
    fix = (f"Materialize {name} again (mt-assets materialize --select {name})" if name.isidentifier() else
           f"Give the folder of a complete adapter ({ADAPTER_CONFIG} and {ADAPTER_WEIGHTS[0]})")
    try:
        json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"adapter {name}: {folder / ADAPTER_CONFIG} cannot be read ({type(err).__name__}). "
                         f"{fix}") from None
    weights = [folder / w for w in ADAPTER_WEIGHTS if (folder / w).is_file()]
    if not weights:
        raise ValueError(f"adapter {name}: no weights file ({' or '.join(ADAPTER_WEIGHTS)}) in {folder}. {fix}")
    if weights[0].stat().st_size == 0:
        raise ValueError(f"adapter {name}: the weights file {weights[0]} is empty. {fix}")


@torch.inference_mode()
def translate(model, tokenizer, sources: Sequence[str], source_lang: str, target_lang: str, *,
              batch_size: int = 16, max_new_tokens: int = 128, max_prompt_tokens: int | None = None,
              progress: Callable[[int, int], None] | None = None, desc: str = "translating",
              decoder: str = "fast", token_budget: int | None = None, kernels: str | None = "fast",
              stats: dict | None = None, examples: Sequence[tuple[str, str]] = ()) -> list[str]:
    """Translate every source sentence, in the order given.

    Sentences are batched by length (fewer pad tokens), decoded greedily, and each row stops at
    its first newline or EOS while the others go on. Outputs are cleaned of echoed prompt labels.

    `decoder`: ``fast`` or ``generate`` (the reference; see the module docstring). `token_budget`
    (fast decoder): a batch holds as many sentences as fit in that many tokens of prompt plus
    `max_new_tokens` (its KV cache), instead of `batch_size`. `kernels`: ``fast`` or ``eager``
    attention for the model (GELU is fused at load either way) (lib.translation.kernels; None leaves it as it is). `stats`, when given, gets
    ``sentences`` and ``new_tokens`` (tokens generated, up to and including each stop token) added.
    `examples`: (source, target) pairs shown before each sentence (lib.translation.prompt.build_fewshot_prompt).
    """
    if tokenizer.padding_side != "left":
        raise ValueError("translation needs a left-padding tokenizer (load it with models.load_tokenizer)")
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r} (setting evaluation.decoder): use one of {DECODERS}")
    if kernels is not None:
        from mt_assets.lib.translation.kernels import set_kernels

        set_kernels(model, kernels)
    prompts = [build_fewshot_prompt(examples, s, source_lang, target_lang) for s in sources]
    texts = complete_lines(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           max_prompt_tokens=max_prompt_tokens, progress=progress, desc=desc, decoder=decoder,
                           token_budget=token_budget, stats=stats)
    return [clean_output(text, source_lang, target_lang) for text in texts]


def complete_lines(model, tokenizer, prompts: Sequence[str], *, batch_size: int = 16, max_new_tokens: int = 128,
                   max_prompt_tokens: int | None = None, progress: Callable[[int, int], None] | None = None,
                   desc: str = "generating", decoder: str = "fast", token_budget: int | None = None,
                   stats: dict | None = None) -> list[str]:
    """Each prompt's greedy continuation up to its first newline or EOS, decoded without special
    tokens, in the order given; batched by length (see `translate`, which is this with its prompts
    and the outputs cleaned). For any plain-text prompt whose answer is one line, e.g. a teacher's."""
    if tokenizer.padding_side != "left":
        raise ValueError("batched generation needs a left-padding tokenizer (load it with models.load_tokenizer)")
    from mt_assets.lib.translation.decoding import contiguous_head_input

    run = _fast_batches if decoder == "fast" else _generate_batches
    outputs: list[str | None] = [None] * len(prompts)
    new_tokens = done = 0
    # a caller that takes `progress` shows it its own way (mt_assets.console draws one bar from it);
    # both decoders' LM heads read contiguous inputs (lib.translation.decoding: 10x on frozen models)
    with tqdm(total=len(prompts), desc=desc, unit="sent", leave=False, disable=progress is not None) as bar, \
            contiguous_head_input(model):
        for batch, continuations in run(model, tokenizer, list(prompts), batch_size=batch_size,
                                        max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens,
                                        token_budget=token_budget):
            for row, text in zip(batch, tokenizer.batch_decode(continuations, skip_special_tokens=True)):
                outputs[row] = text
            new_tokens += sum(len(c) for c in continuations)
            done += len(batch)
            bar.update(len(batch))
            if progress:
                progress(done, len(prompts))
    if stats is not None:
        stats["sentences"] = stats.get("sentences", 0) + len(prompts)
        stats["new_tokens"] = stats.get("new_tokens", 0) + new_tokens
    return outputs  # type: ignore[return-value]


def _fast_batches(model, tokenizer, prompts: list[str], *, batch_size: int, max_new_tokens: int,
                  max_prompt_tokens: int | None, token_budget: int | None):
    from mt_assets.lib.translation.batching import token_budget_batches
    from mt_assets.lib.translation.decoding import greedy_decode, newline_stop_rule

    encoded = tokenizer(prompts, truncation=max_prompt_tokens is not None, max_length=max_prompt_tokens)["input_ids"]
    device = next(model.parameters()).device
    stop = newline_stop_rule(tokenizer, model.get_output_embeddings().weight.shape[0], device)
    lengths = [len(ids) + max_new_tokens for ids in encoded]
    if token_budget is None:
        order = sorted(range(len(encoded)), key=lambda i: lengths[i], reverse=True)
        batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    else:
        batches = token_budget_batches(lengths, token_budget)
    for batch in batches:
        yield batch, greedy_decode(model, [encoded[i] for i in batch], stop, pad_id=tokenizer.pad_token_id,
                                   max_new_tokens=max_new_tokens)


def _generate_batches(model, tokenizer, prompts: list[str], *, batch_size: int, max_new_tokens: int,
                      max_prompt_tokens: int | None, token_budget: int | None):
    """The reference: `generate` with `stop_strings`, batches of `batch_size` by character length."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                            truncation=max_prompt_tokens is not None, max_length=max_prompt_tokens).to(device)
        generated = model.generate(
            **encoded, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
            eos_token_id=eos, pad_token_id=pad, stop_strings=["\n"], tokenizer=tokenizer,
        )
        new_tokens = generated[:, encoded["input_ids"].shape[1]:]
        yield batch, [_until_stop(row.tolist(), eos, pad) for row in new_tokens]


def _until_stop(tokens: list[int], eos: int, pad: int) -> list[int]:
    """A `generate` row without the padding after its end (EOS kept; pad may equal EOS)."""
    if eos in tokens:
        return tokens[:tokens.index(eos) + 1]
    while tokens and tokens[-1] == pad:
        tokens.pop()
    return tokens
