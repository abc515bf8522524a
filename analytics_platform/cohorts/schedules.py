"""The daily cohort job (detection then marking) at 11:00 UTC, as the old service ran."""

from __future__ import annotations

import dagster as dg

from analytics_platform.cohorts.assets import COHORT_KEY, TEMP_USERS_KEY
from analytics_platform.cohorts.rules import iso_utc

TEMP_USERS_OP = "peerplay__state_loss_temp_users"

temp_users_cohort_job = dg.define_asset_job(
    "temp_users_cohort_job",
    selection=dg.AssetSelection.assets(TEMP_USERS_KEY, COHORT_KEY),
    description="Detect state-loss temp users, then mark them in Mixpanel (with the checks).",
    tags={"domain": "cohorts"},
)


def daily_run_config(as_of_iso: str) -> dict:
    return {"ops": {TEMP_USERS_OP: {"config": {"as_of": as_of_iso}}}}


@dg.schedule(
    name="temp_users_cohort_daily",
    cron_schedule="0 11 * * *",
    execution_timezone="UTC",
    job=temp_users_cohort_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 11:00 UTC: detection with as_of = the scheduled time, then marking.",
)
def temp_users_cohort_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    as_of = iso_utc(context.scheduled_execution_time)
    return dg.RunRequest(run_key=f"temp_users_cohort:{as_of}", run_config=daily_run_config(as_of))
