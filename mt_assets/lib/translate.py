"""Batched greedy translation with a causal LM: left padding, per-row stop at end of line or EOS."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from mt_assets.lib.prompt import build_prompt, clean_output


@torch.inference_mode()
def translate(model, tokenizer, sources: Sequence[str], source_lang: str, target_lang: str, *,
              batch_size: int = 16, max_new_tokens: int = 128, max_prompt_tokens: int | None = None,
              progress: Callable[[int, int], None] | None = None, desc: str = "translating") -> list[str]:
    """Translate every source sentence, in the order given.

    Sentences are batched by length (fewer pad tokens), decoded greedily, and each row stops at
    its first newline or EOS while the others go on. Outputs are cleaned of echoed prompt labels.
    """
    if tokenizer.padding_side != "left":
        raise ValueError("translation needs a left-padding tokenizer (load it with models.load_tokenizer)")
    prompts = [build_prompt(s, source_lang, target_lang) for s in sources]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    outputs: list[str | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    with tqdm(total=len(prompts), desc=desc, unit="sent", leave=False) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                                truncation=max_prompt_tokens is not None, max_length=max_prompt_tokens).to(device)
            generated = model.generate(
                **encoded, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                stop_strings=["\n"], tokenizer=tokenizer,
            )
            new_tokens = generated[:, encoded["input_ids"].shape[1]:]
            for row, text in zip(batch, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                outputs[row] = clean_output(text, source_lang, target_lang)
            bar.update(len(batch))
            if progress:
                progress(min(start + batch_size, len(order)), len(order))
    return outputs  # type: ignore[return-value]
