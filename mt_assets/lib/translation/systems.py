"""The systems that translate a test set: the base model alone and with each adapter, and the
lineage each system's translations carry (what an adapter was trained on, its content hash)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from mt_assets.lib.hashing import folder_hash, table_hash
from mt_assets.lib.lora.adapter_folder import read_lineage
from mt_assets.lib.translation.cache import TranslationCache, cache_key
from mt_assets.lib.translation.fewshot import example_pairs
from mt_assets.lib.translation.translate import check_adapter_folder, translate

NO_ADAPTER = {"adapter": "", "adapter_hash": "", "training_table": "", "training_table_hash": ""}
"""The lineage columns of a system without an adapter (the base model, zero-shot)."""


def attach_adapters(model, adapters: Mapping[str, tuple[str, Path]]):
    """`model` with every adapter folder loaded onto it, in eval mode: `adapters` maps the name the
    adapter gets on the model (a system) to the adapter's name (an asset, or the folder's path as
    given) and its folder. Each folder is checked first (lib.translation.translate.check_adapter_folder:
    the error names the adapter, the file and the fix), so a damaged one stops before any loading."""
    for name, folder in adapters.values():
        check_adapter_folder(folder, name)
    for system, (_, folder) in adapters.items():
        from peft import PeftModel

        if not isinstance(model, PeftModel):
            model = PeftModel.from_pretrained(model, str(folder), adapter_name=system)
        elif system not in model.peft_config:
            model.load_adapter(str(folder), adapter_name=system)
    return model.eval()


def adapter_lineage(asset: str | None, folder: Path | None) -> dict[str, str]:
    """The lineage columns of a system: its adapter asset, the adapter folder's content hash, and the
    table it was trained on with that table's hash (all empty for the base model)."""
    if asset is None:
        return dict(NO_ADAPTER)
    trained = read_lineage(folder)
    return {"adapter": asset, "adapter_hash": folder_hash(Path(folder)), "training_table": trained["training_table"],
            "training_table_hash": trained["training_table_hash"]}


def base_model_mismatch(folder: Path, adapter: str, base_model: str) -> str | None:
    """A warning when the adapter folder records a base model other than `base_model`, else None."""
    trained_on = read_lineage(folder).get("base_model")
    if trained_on and trained_on != base_model:
        return f"{adapter} was trained on {trained_on}, this profile's base model is {base_model}"
    return None


def translate_systems(model, tokenizer, test: pd.DataFrame, systems: Mapping[str, str | None],
                      folders: Mapping[str, Path], reference: dict, *, log: Callable[[str], None] = print,
                      fewshot: Mapping[str, pd.DataFrame] | None = None, cache: TranslationCache | None = None,
                      cache_scope: Mapping | None = None, stats: dict | None = None, **settings) -> pd.DataFrame:
    """One row per test pair and system: the system's translation with its lineage.

    `model` carries each system's adapter under the system's name (attach_adapters); `systems` maps
    a system to its adapter asset (None: the base model, adapters disabled), `folders` an adapter
    asset to its folder. `reference`: the base model's ``base_model`` and ``revision``. `fewshot`: the
    worked examples (pair_id, source, target; lib.translation.fewshot) a system's prompts show, their
    pair_ids recorded in the ``fewshot_pair_ids`` column. `settings` go to
    lib.translation.translate.translate (batch_size, max_new_tokens, decoder, ...).

    `cache` (lib.translation.cache): a system whose translations of this test set are stored under the
    same key (adapter hash, base model, test table, examples, settings, and `cache_scope`, e.g. the
    model's precision) is not translated again. `stats`, when given, gets per system ``sentences``,
    ``new_tokens``, ``seconds``, ``tokens_per_s`` (of the run that translated it) and ``reused``."""
    fewshot = fewshot or {}
    source_lang, target_lang = test["source_lang"].iloc[0], test["target_lang"].iloc[0]
    test_hash = table_hash(test)
    frames = []
    for system, asset in systems.items():
        lineage = adapter_lineage(asset, folders.get(asset) if asset else None)
        examples = fewshot.get(system)
        key = cache_key(adapter_hash=lineage["adapter_hash"], reference=reference, test=test_hash,
                        langs=(source_lang, target_lang), settings=settings, scope=dict(cache_scope or {}),
                        examples=None if examples is None else example_pairs(examples))
        stored = cache.get(key, len(test)) if cache is not None else None
        if stored is not None:
            log(f"Reusing system {system}'s {len(test)} stored translations (nothing they depend on changed)")
            hypotheses, run = stored
        else:
            hypotheses, run = _translate_system(model, tokenizer, test, system, asset, examples, log, settings)
            if cache is not None:
                cache.put(key, hypotheses, run)
        if stats is not None:
            stats[system] = {**run, "reused": stored is not None}
        frames.append(pd.DataFrame({
            "pair_id": test["pair_id"], "system": system, "source": test["source"],
            "reference": test["target"], "hypothesis": hypotheses,
            "source_lang": source_lang, "target_lang": target_lang,
            "test_table_hash": test_hash, **lineage,
            "base_model": reference["base_model"], "base_revision": reference["revision"] or "",
            "fewshot_pair_ids": "" if examples is None else ",".join(examples["pair_id"]),
        }))
    return pd.concat(frames, ignore_index=True)


def _translate_system(model, tokenizer, test: pd.DataFrame, system: str, asset: str | None,
                      examples: pd.DataFrame | None, log: Callable[[str], None], settings: dict) -> tuple[list[str], dict]:
    """One system's translations of `test` and the run's statistics (sentences, tokens, seconds)."""
    log(f"Translating {len(test)} sentences with system {system}")
    every = settings.get("batch_size", 16) * 10

    def progress(done, total):
        if done == total or done % every == 0:
            log(f"system {system}: {done}/{total} sentences")

    if asset is None:
        context = model.disable_adapter() if _has_adapters(model) else contextlib.nullcontext()
    else:
        model.set_adapter(system)
        context = contextlib.nullcontext()
    counted = {"sentences": 0, "new_tokens": 0}
    started = time.perf_counter()
    with context:
        hypotheses = translate(model, tokenizer, list(test["source"]), test["source_lang"].iloc[0],
                               test["target_lang"].iloc[0], progress=progress, desc=f"system {system}", stats=counted,
                               examples=[] if examples is None else example_pairs(examples), **settings)
    seconds = time.perf_counter() - started
    return hypotheses, {**counted, "seconds": round(seconds, 3),
                        "tokens_per_s": round(counted["new_tokens"] / seconds, 2) if seconds > 0 else 0.0}


def _has_adapters(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
