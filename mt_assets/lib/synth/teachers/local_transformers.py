"""A teacher run in this process: a causal LM from transformers, loaded on the first request."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from mt_assets.lib.synth.teachers.base import Messages, TeacherConfigError, cut_at_stop

class TransformersTeacher:
    """A causal LM run in-process: pass a loaded ``model`` and ``tokenizer``, or a ``loader``
    returning ``(model, tokenizer)`` (the base model's loader), called on the first request.

    The prompt is the tokenizer's chat template when it has one, else a plain
    "System: ... / User: ... / Assistant:" transcript. ``seed`` seeds torch before sampling.
    ``model_name`` (required with a loader, so cached requests need no model load) names the
    model in the cache key and the origin column.
    """

    backend = "transformers"
    max_concurrency = 1

    def __init__(self, model=None, tokenizer=None, *, loader: Callable[[], tuple[Any, Any]] | None = None,
                 model_name: str | None = None, max_new_tokens: int | None = None,
                 tokens_per_pair: int = 96, tokens_base: int = 64, temperature: float = 0.7,
                 top_p: float = 0.95, do_sample: bool = True, batch_size: int = 16):
        if (model is None) != (tokenizer is None):
            raise TeacherConfigError("TransformersTeacher needs both model and tokenizer (or a loader)")
        if model is None and loader is None:
            raise TeacherConfigError("TransformersTeacher needs a model and tokenizer, or a loader")
        if model is None and not model_name:
            raise TeacherConfigError("TransformersTeacher with a loader needs model_name (the cache key)")
        self._model, self._tokenizer, self._loader = model, tokenizer, loader
        self.model = model_name or getattr(model, "name_or_path", None) or type(model).__name__
        self.max_new_tokens = max_new_tokens
        self.tokens_per_pair, self.tokens_base = tokens_per_pair, tokens_base
        self.temperature, self.top_p, self.do_sample = temperature, top_p, do_sample
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self.stats: Counter = Counter()

    def __repr__(self) -> str:
        return f"TransformersTeacher(model={self.model!r}, loaded={self._model is not None})"

    def cache_identity(self) -> dict:
        return {
            "backend": self.backend, "model": self.model, "max_new_tokens": self.max_new_tokens,
            "tokens_per_pair": self.tokens_per_pair, "tokens_base": self.tokens_base,
            "temperature": self.temperature, "top_p": self.top_p, "do_sample": self.do_sample,
        }

    def _loaded(self):
        if self._model is None:
            self._model, self._tokenizer = self._loader()
        return self._model, self._tokenizer

    @staticmethod
    def render_prompt(tokenizer, messages: Messages) -> tuple[str, bool]:
        """The prompt text and whether it came from the chat template (which adds its own BOS)."""
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                                 add_generation_prompt=True)
            return text, True
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n\n".join(lines) + "\n\nAssistant:", False

    def request(self, messages: Messages, *, seed: int, n: int) -> str:
        with self._lock:
            model, tokenizer = self._loaded()
            prompt, templated = self.render_prompt(tokenizer, messages)
            budget = self.max_new_tokens or self.tokens_base + self.tokens_per_pair * n
            return self._generate(prompt, not templated, seed, budget)

    def complete(self, prompt: str, *, seed: int, stop: Sequence[str]) -> str:
        """Translate mode: the plain-text prompt as is (no chat template), cut at ``stop``."""
        with self._lock:
            self._loaded()
            budget = self.max_new_tokens or self.tokens_base + self.tokens_per_pair
            return cut_at_stop(self._generate(prompt, True, seed, budget), stop)

    @property
    def completes_in_batches(self) -> bool:
        """Greedy decoding (no sampling, so a request's seed changes nothing): translate-mode prompts
        are answered many at once (complete_many)."""
        return not self.do_sample

    def complete_many(self, prompts: Sequence[str], *, stop: Sequence[str]) -> list[str]:
        """Translate mode, greedy: every prompt's continuation to its first newline, in batches sorted
        by length (lib.translation.translate.complete_lines, the decoder the evaluation uses), each cut
        at ``stop``: the first line of what ``complete`` gives one prompt at a time, at a fraction of the time."""
        from mt_assets.lib.translation.translate import complete_lines

        with self._lock:
            model, tokenizer = self._loaded()
            budget = self.max_new_tokens or self.tokens_base + self.tokens_per_pair
            texts = complete_lines(model, tokenizer, prompts, batch_size=self.batch_size, max_new_tokens=budget,
                                   progress=lambda done, total: None)
            return [cut_at_stop(text.split("\n", 1)[0], stop) for text in texts]

    def _generate(self, prompt: str, add_special_tokens: bool, seed: int, max_new_tokens: int) -> str:
        """The decoded continuation of ``prompt``. A prompt longer than the model's context
        (less the tokens to generate) keeps its end (counted in ``stats["prompts_truncated"]``):
        the request is at the end, the examples at the start."""
        import torch

        model, tokenizer = self._model, self._tokenizer
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=add_special_tokens)
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if context and inputs["input_ids"].shape[1] + max_new_tokens > context:
            keep = context - max_new_tokens
            if keep < 1:
                raise TeacherConfigError(
                    f"teacher max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
                    f"context of {context} tokens: lower max_new_tokens or tokens_per_pair")
            inputs = {k: v[:, -keep:] for k, v in inputs.items()}
            self.stats["prompts_truncated"] += 1
        device = getattr(model, "device", None)
        if device is not None:
            inputs = {k: v.to(device) for k, v in inputs.items()}
        torch.manual_seed(seed)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        generate_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": self.do_sample, "pad_token_id": pad}
        if self.do_sample:
            generate_kwargs.update(temperature=self.temperature, top_p=self.top_p)
        with torch.no_grad():
            output = model.generate(**inputs, **generate_kwargs)
        new_tokens = output[0, inputs["input_ids"].shape[1]:]
        return tokenizer.decode(new_tokens, skip_special_tokens=True)
