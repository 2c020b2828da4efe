"""Synthesis settings (``SynthConfig``) and request planning: request i is a pure function of
(train_A, settings, i), so a rerun asks the same questions and finds them in the cache."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mt_assets.lib.synth.filters import FilterConfig
from mt_assets.lib.synth.prompt import DEFAULT_TOPICS, build_messages

MODES = ("topics", "translate")
"""Synthesis modes: ``topics`` (new pairs on topics, a JSON reply) and ``translate`` (sequence-level
distillation: the teacher translates held-out source sentences, one plain-text line each)."""


@dataclass(frozen=True)
class SynthConfig:
    """Settings of one synthetic-data run.

    ``size`` pairs (None: ``size_factor`` x len(train_A)) from at most ``max_requests`` requests
    (None: ``budget_factor`` x the requests needed if every pair were valid) of
    ``pairs_per_request`` pairs each.
    """

    size: int | None = field(default=None, metadata={"help": "Pairs wanted; None: size_factor x len(train_A)."})
    size_factor: float = 2.0
    pairs_per_request: int = 10
    max_requests: int | None = field(default=None, metadata={
        "help": "Request budget; None: budget_factor x the requests needed if every pair were valid."})
    budget_factor: float = 3.0
    topics: tuple[str, ...] = DEFAULT_TOPICS
    few_shot: int = 3
    seed: int = 0
    mode: str = field(default="topics", metadata={"help": "topics: the teacher writes new pairs on topics "
                      "(JSON); translate: it translates sentences of source_pool, one line per request."})
    filters: FilterConfig = field(default_factory=FilterConfig)

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 1:
            raise ValueError(f"synth size={self.size} must be at least 1 (or None for size_factor x train)")
        if self.size_factor <= 0:
            raise ValueError(f"synth size_factor={self.size_factor} must be positive")
        if self.pairs_per_request < 1:
            raise ValueError(f"synth pairs_per_request={self.pairs_per_request} must be at least 1")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError(f"synth max_requests={self.max_requests} must be at least 1")
        if self.budget_factor < 1:
            raise ValueError(f"synth budget_factor={self.budget_factor} must be at least 1")
        if not self.topics or any(not str(t).strip() for t in self.topics):
            raise ValueError(f"synth topics {list(self.topics)} must be a non-empty list of non-empty names")
        if self.mode not in MODES:
            raise ValueError(f"synthesis mode={self.mode!r} is not one of {list(MODES)}")
        if self.few_shot < 0:
            raise ValueError(f"synth few_shot={self.few_shot} must be >= 0")

    def target_size(self, train_rows: int) -> int:
        return self.size if self.size is not None else max(1, round(self.size_factor * train_rows))

    def request_budget(self, target: int) -> int:
        if self.max_requests is not None:
            return self.max_requests
        return max(1, math.ceil(self.budget_factor * math.ceil(target / self.per_request)))

    @property
    def per_request(self) -> int:
        """Pairs one request asks for: pairs_per_request in topics mode, one in translate mode."""
        return 1 if self.mode == "translate" else self.pairs_per_request


@dataclass(frozen=True)
class PlannedRequest:
    index: int
    topic: str
    seed: int
    examples: tuple[tuple[str, str], ...]
    messages: tuple[dict, ...]
    source: str | None = None
    """Translate mode: the pool sentence to translate (then ``prompt`` replaces ``messages``)."""
    prompt: str | None = None
    stop: tuple[str, ...] = ()

    def cache_extra(self) -> dict:
        """What names a translate-mode request in the cache besides identity, messages and seed
        (its mode, source sentence, prompt and stop strings); nothing in topics mode, whose keys
        are those of earlier versions."""
        if self.source is None:
            return {}
        return {"mode": "translate", "source": self.source, "prompt": self.prompt, "stop": list(self.stop)}

    def cache_record(self, identity: dict) -> dict:
        """What the request cache keeps beside a reply: who answered, and what was asked."""
        return {"identity": identity, "index": self.index, "topic": self.topic, "seed": self.seed,
                "messages": list(self.messages), **self.cache_extra()}

    def send(self, teacher, n: int) -> str:
        if self.source is None:
            return teacher.request(list(self.messages), seed=self.seed, n=n)
        return teacher.complete(self.prompt, seed=self.seed, stop=list(self.stop))


class RequestPlanner:
    """Plans request i as a pure function of (train_A, config, i); see the module docstring."""

    def __init__(self, train: pd.DataFrame, config: SynthConfig, source_lang: str, target_lang: str):
        ordered = train.sort_values("pair_id", kind="stable")
        self.examples_pool = list(zip(ordered["source"], ordered["target"]))
        self.config, self.source_lang, self.target_lang = config, source_lang, target_lang

    def examples(self, index: int) -> tuple[tuple[str, str], ...]:
        """Request ``index``'s few-shot pairs: ``few_shot`` of train_A, seeded by (seed, index)."""
        k = min(self.config.few_shot, len(self.examples_pool))
        rng = np.random.default_rng([self.config.seed, index])
        rows = sorted(rng.choice(len(self.examples_pool), size=k, replace=False).tolist()) if k else []
        return tuple(self.examples_pool[r] for r in rows)

    def plan(self, index: int) -> PlannedRequest:
        """Request ``index``: its topic, few-shot examples (from train_A only) and seed."""
        config = self.config
        topic = config.topics[index % len(config.topics)]
        examples = self.examples(index)
        messages = build_messages(source_lang=self.source_lang, target_lang=self.target_lang, topic=topic,
                                  n=config.pairs_per_request, examples=examples)
        return PlannedRequest(index, topic, config.seed + index, examples, tuple(messages))
