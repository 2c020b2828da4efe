"""The pair table as a Dagster type and column schema, from the one pandera schema in lib/."""


import warnings

import dagster as dg
import pandas as pd
from dagster_pandera import pandera_schema_to_dagster_type

from mt_assets.lib.data.pairs import PairSchema

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)  # stable in practice; pinned in pyproject
    PairTable = pandera_schema_to_dagster_type(PairSchema)
PAIR_TABLE_METADATA = {"dagster/column_schema": PairTable.metadata["schema"].schema}
PAIR_TABLE_KINDS = {"pandas", "parquet"}


def pair_table_asset(*, group_name: str, description: str, **asset_args):
    """``@dg.asset`` for an asset whose value is a pair table (opus_sample, synth_B, combined_C):
    its kinds, Dagster type and column schema; ``asset_args`` (name, pool, op_tags) go to ``dg.asset``."""
    return dg.asset(group_name=group_name, kinds=PAIR_TABLE_KINDS, code_version="1", dagster_type=PairTable,
                    metadata=PAIR_TABLE_METADATA, description=description, **asset_args)


def preview(frame: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    """A few rows as Markdown for the asset's page in the UI."""
    columns = [c for c in ("pair_id", "source", "target", "origin", "topic") if c in frame]
    return dg.MetadataValue.md(frame.head(rows)[columns].to_markdown(index=False))


def _schema(columns: dict[str, tuple[str, str]]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, kind, description=text)
                                   for name, (kind, text) in columns.items()])


_LINEAGE = {
    "test_table_hash": ("string", "SHA-256 of the test table's rows scored (lib.hashing.table_hash)"),
    "adapter": ("string", "the adapter asset of the system (empty for A, the base model)"),
    "adapter_hash": ("string", "SHA-256 of the adapter folder used (lib.hashing.folder_hash)"),
    "training_table": ("string", "the table the adapter was trained on; for E (adapter_E, merged from two "
                       "adapters) each parent as <adapter>:<table> joined by '+': adapter_B:train_A+adapter_C:synth_B"),
    "training_table_hash": ("string", "SHA-256 of the rows the trainer read; for E the parents' table hashes "
                            "joined by '+', in the order of training_table"),
    "base_model": ("string", "the base model as configured"),
    "base_revision": ("string", "the base model's revision: a Hub commit, or sha256:<hash> of a GGUF file"),
    "fewshot_pair_ids": ("string", "comma-separated train_A pair_ids of the examples the prompts show "
                         "(A_fewshot; empty for the others)"),
}
TRANSLATIONS_SCHEMA = _schema({
    "pair_id": ("string", "the test pair (test_A.pair_id)"),
    "system": ("string", "A (the base model, zero-shot), A_fewshot (the base model shown examples from "
               "train_A), or B, C, D, E (the base model with adapter_B, _C, _D, _E)"),
    "source": ("string", "the source sentence"),
    "reference": ("string", "the reference translation (test_A.target)"),
    "test_set": ("string", "the test set: evaluation.test_set_name (test_A) or ood_test.name (test_ood)"),
    "hypothesis": ("string", "the system's greedy translation"),
    "source_lang": ("string", "ISO 639 code of the source language"),
    "target_lang": ("string", "ISO 639 code of the target language"),
    **_LINEAGE,
})
BLEU_TABLE_SCHEMA = _schema({
    "system": ("string", "A, A_fewshot, B, C, D or E (see translations)"),
    "test_set": ("string", "the test set scored (see translations); p-values compare systems within it"),
    "bleu": ("float", "corpus BLEU (sacreBLEU), 0-100"),
    "bleu_ci95": ("float", "half-width of the 95% bootstrap confidence interval of bleu"),
    "chrf": ("float", "corpus chrF (sacreBLEU), 0-100"),
    "chrf_ci95": ("float", "half-width of the 95% bootstrap confidence interval of chrf"),
    "bleu_p_vs_A": ("float", "paired bootstrap p-value of the BLEU difference against system A (empty for A)"),
    "chrf_p_vs_A": ("float", "paired bootstrap p-value of the chrF difference against system A (empty for A)"),
    "bleu_p_vs_B": ("float", "paired bootstrap p-value of the BLEU difference against system B (empty for B)"),
    "chrf_p_vs_B": ("float", "paired bootstrap p-value of the chrF difference against system B (empty for B)"),
    "bleu_signature": ("string", "sacreBLEU's signature of the BLEU settings"),
    "chrf_signature": ("string", "sacreBLEU's signature of the chrF settings"),
    "segments": ("int", "test pairs scored"),
    "off_target_rate": ("float", "share of outputs not identified as the target language (empty ones count)"),
    "empty_outputs": ("int", "outputs with no text"),
    **_LINEAGE,
})
"""Column schemas of the evaluation tables, shown on their asset pages in the UI."""
