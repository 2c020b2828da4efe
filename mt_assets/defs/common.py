"""What several asset domains share: the GPU pool and its tags, the check helpers, and the
constrained setting types of the resources."""

from typing import Annotated

import dagster as dg
import pandas as pd
import pydantic

from mt_assets.lib.data import validators

GPU_POOL = "gpu"
"""The concurrency pool of every asset that runs a model: its limit (1 in .dagster_home/dagster.yaml)
is how many of them run at once; assets outside it run in parallel."""
GPU_TAGS = {"dagster-k8s/config": {
    "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
    "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
}}
"""Op tags of the same assets: on Kubernetes (dagster-k8s), each runs in a pod that requests a GPU and
tolerates GPU nodes' taint. Other executors ignore them; per_step_k8s_config in a profile adds more."""

AtLeastOne = Annotated[int, pydantic.Field(ge=1)]
"""A count that 0 would make meaningless (batch sizes, tokens to generate): refused as a setting."""
NonNegative = Annotated[int, pydantic.Field(ge=0)]
"""A count where 0 means none (few-shot examples)."""
Positive = Annotated[float, pydantic.Field(gt=0)]
Seed = Annotated[int, pydantic.Field(ge=0, le=2**32 - 1)]
"""A seed every generator takes (numpy's and torch's refuse negative ones)."""
Fraction = Annotated[float, pydantic.Field(gt=0, lt=1)]


def check_result(finding: validators.Finding, passed: bool | None = None, severity=dg.AssetCheckSeverity.ERROR,
                 **metadata) -> dg.AssetCheckResult:
    """A check's result from a validator's finding: its counts and examples as metadata."""
    return dg.AssetCheckResult(
        passed=finding.ok if passed is None else passed,
        severity=severity,
        metadata={"flagged": finding.count, "rows": finding.total,
                  "examples": dg.MetadataValue.json(finding.examples), **metadata},
    )


def table_checks(asset_key: str) -> list[dg.AssetChecksDefinition]:
    """Text-quality checks shared by every pair table."""

    @dg.asset_check(asset=asset_key, name="no_blank_text",
                    description="No pair has an empty or whitespace-only source or target.")
    def no_blank_text(table: pd.DataFrame) -> dg.AssetCheckResult:
        return check_result(validators.blank_text(table))

    @dg.asset_check(asset=asset_key, name="no_duplicate_pairs",
                    description="No pair repeats another pair's source and target.")
    def no_duplicate_pairs(table: pd.DataFrame) -> dg.AssetCheckResult:
        return check_result(validators.duplicate_pairs(table))

    @dg.asset_check(asset=asset_key, name="source_differs_from_target",
                    description="No pair's target is a copy of its source.")
    def source_differs_from_target(table: pd.DataFrame) -> dg.AssetCheckResult:
        return check_result(validators.source_equals_target(table))

    return [no_blank_text, no_duplicate_pairs, source_differs_from_target]
