"""The one prompt format, used identically for training and for translation.

A training example is ``prompt + completion``; the loss covers only the completion. Translation
feeds ``prompt`` and reads the model's continuation up to the end of the line.
"""

from __future__ import annotations

from mt_assets.lib.languages import language_name

PROMPT_TEMPLATE = "Translate {source_name} to {target_name}.\n{source_name}: {source}\n{target_name}:"
COMPLETION_TEMPLATE = " {target}\n"


def build_prompt(source: str, source_lang: str, target_lang: str) -> str:
    """The prompt that asks for a translation of `source`; the answer follows on the same line."""
    return PROMPT_TEMPLATE.format(source_name=language_name(source_lang), target_name=language_name(target_lang),
                                  source=source)


def build_completion(target: str) -> str:
    """What the model should write after the prompt (the tokenizer's EOS is appended in training)."""
    return COMPLETION_TEMPLATE.format(target=target)


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
