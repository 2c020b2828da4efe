"""The one prompt format, used identically for training and for translation.

A training example is ``prompt + completion``; the loss covers only the completion. Translation
feeds ``prompt`` and reads the model's continuation up to the end of the line.
"""

from __future__ import annotations

from collections.abc import Sequence

from mt_assets.lib.data.languages import language_name

PROMPT_TEMPLATE = "Translate {source_name} to {target_name}.\n{source_name}: {source}\n{target_name}:"
COMPLETION_TEMPLATE = " {target}\n"


def build_prompt(source: str, source_lang: str, target_lang: str) -> str:
    """The prompt that asks for a translation of `source`; the answer follows on the same line."""
    return PROMPT_TEMPLATE.format(source_name=language_name(source_lang), target_name=language_name(target_lang),
                                  source=source)


def build_completion(target: str) -> str:
    """What the model should write after the prompt (the tokenizer's EOS is appended in training)."""
    return COMPLETION_TEMPLATE.format(target=target)


def build_fewshot_prompt(examples: Sequence[tuple[str, str]], source: str, source_lang: str, target_lang: str) -> str:
    """The prompt with worked examples first: each (source, target) example as ``build_prompt +
    build_completion``, one after another, then the prompt for `source`. No examples: `build_prompt`."""
    shown = "".join(build_prompt(s, source_lang, target_lang) + build_completion(t) for s, t in examples)
    return shown + build_prompt(source, source_lang, target_lang)


def clean_output(text: str, source_lang: str, target_lang: str) -> str:
    """The translation in a raw continuation: the first line, without echoed prompt labels.

    Models (the zero-shot base model especially) often echo the format: ``French: ...`` or a new
    ``German: ...`` line. Only the text of the first answer line is kept.
    """
    source_label, target_label = f"{language_name(source_lang)}:", f"{language_name(target_lang)}:"
    line = text.lstrip().split("\n", 1)[0].strip()
    for label in (target_label, source_label):
        if line.startswith(label):
            line = line[len(label):].strip()
    return line


def context_length(config) -> int | None:
    """The positions a model takes (GPT-Neo, Llama: max_position_embeddings; GPT-2: n_positions)."""
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def prompts_too_long(tokenizer, config, sources, source_lang: str, target_lang: str, max_new_tokens: int,
                     examples: Sequence[tuple[str, str]] = ()) -> tuple[int | None, list[tuple[int, int]]]:
    """The model's context and the (index, prompt tokens) of each source whose prompt plus
    `max_new_tokens` does not fit in it: translating those would fail, or ask for memory without bound.
    With `examples`, the few-shot prompt (build_fewshot_prompt) is the one measured."""
    limit = context_length(config)
    if limit is None:
        return None, []
    prompts = [build_fewshot_prompt(examples, s, source_lang, target_lang) for s in sources]
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
    return limit, [(i, n) for i, n in enumerate(lengths) if n + max_new_tokens > limit]


def check_prompts_fit(tokenizer, config, sources, source_lang: str, target_lang: str, max_new_tokens: int,
                      where: str, labels, advice: str, examples: Sequence[tuple[str, str]] = ()) -> None:
    """Raise ValueError naming `where` and the labels (row names) of the sources too long to translate
    (with `examples` shown before each, when given)."""
    limit, long_rows = prompts_too_long(tokenizer, config, sources, source_lang, target_lang, max_new_tokens,
                                        examples)
    if long_rows:
        labels = list(labels)
        shown = ", ".join(f"{labels[i]} ({tokens} tokens)" for i, tokens in long_rows[:5])
        raise ValueError(
            f"{where}: {len(long_rows)} sentence(s) too long for the model's context of {limit} tokens with "
            f"max_new_tokens {max_new_tokens}: {shown}{', ...' if len(long_rows) > 5 else ''}. {advice}")
