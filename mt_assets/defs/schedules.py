"""The jobs, tagged with the profile, and the evaluation schedule: translations, bleu_table and
bleu_chart again, weekly by default.

One scheduling style for one asset set. Evaluation runs on a cron schedule: it is cheap next to
training, and a fixed re-run re-scores the adapters that are there with the current test set,
metrics and language identifier, whoever retrained them in the meantime. The data, synthetic
and training assets are not scheduled: they cost teacher calls and GPU hours, and are rebuilt by
hand (the UI, `mt-assets materialize`) when their inputs change; between runs, code and data
versions (defs/versioning.py) let the UI show exactly which assets a change has made stale.

Every run carries the profile's tags (defs/profiles.py: profile_tags): the jobs have them as run
tags, so runs launched from the UI, by the schedule or by `mt-assets materialize` all say which
profile, and which content of it, they ran with.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
import pydantic

EVALUATION_ASSETS = ("translations", "bleu_table", "bleu_chart")
WEEKLY = "0 3 * * 1"
"""Mondays at 03:00."""
ASSET_JOB = "__ASSET_JOB"
"""The name of the job Dagster builds for every asset, which the UI's Materialize buttons launch."""


def asset_job(tags: Mapping[str, str]):
    """Every asset and its checks, with the profile's run tags.

    Dagster builds its own every-asset job without run tags; a job of the same name in the
    Definitions takes its place, so the UI's Materialize buttons launch runs with these tags."""
    return dg.define_asset_job(ASSET_JOB, selection=dg.AssetSelection.all(), tags=dict(tags),
                               description="Every asset and its checks, tagged with the profile.")


def evaluation_job(tags: Mapping[str, str]):
    return dg.define_asset_job(
        "evaluation_job",
        selection=dg.AssetSelection.assets(*EVALUATION_ASSETS),
        description="Translate test_A with every system again, score the translations and redraw the chart "
        "(the asset checks of these assets run with them).",
        tags=dict(tags),
    )


class ScheduleSettings(pydantic.BaseModel, extra="forbid", frozen=True):
    """A profile's ``schedule`` section."""

    cron: str = WEEKLY
    """When evaluation_job runs (cron syntax)."""
    timezone: str = "UTC"
    running: bool = True
    """Whether the schedule is on without anyone starting it in the UI (the daemon runs it)."""

    @pydantic.field_validator("cron")
    @classmethod
    def _cron(cls, cron: str) -> str:
        try:
            dg.ScheduleDefinition(name="cron_check", cron_schedule=cron, job_name="cron_check")
        except dg.DagsterInvalidDefinitionError as err:
            raise ValueError(f"not a cron schedule: {err}") from None
        return cron


def evaluation_schedule(settings: ScheduleSettings, job) -> dg.ScheduleDefinition:
    """The schedule of `job` (evaluation_job, as dg.define_asset_job returns it); its run requests
    carry the job's tags, the profile's."""
    return dg.ScheduleDefinition(
        name="evaluation_schedule",
        job=job,
        cron_schedule=settings.cron,
        execution_timezone=settings.timezone,
        tags=dict(job.run_tags or {}),
        default_status=dg.DefaultScheduleStatus.RUNNING if settings.running else dg.DefaultScheduleStatus.STOPPED,
        description=f"Re-runs evaluation_job ({', '.join(EVALUATION_ASSETS)}) on cron '{settings.cron}' "
        f"({settings.timezone}).",
    )
