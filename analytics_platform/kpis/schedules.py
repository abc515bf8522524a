"""The daily recalculation (the old detect-inactivity CronJob) and its job."""

from __future__ import annotations

import dagster as dg

from analytics_platform.kpis.assets import WEEKLY_KPI_KEY, as_of_iso, run_config

WEEKLY_KPI_JOB = "weekly_kpi_recalc_job"
DAILY_CRON = "0 2 * * *"

weekly_kpi_job = dg.define_asset_job(
    WEEKLY_KPI_JOB,
    selection=dg.AssetSelection.assets(WEEKLY_KPI_KEY),
    description="Detect inactive learners and recalculate their P/S in weekly_kpi (with the checks).",
    tags={"domain": "kpis"},
)


@dg.schedule(
    name="weekly_kpi_daily",
    cron_schedule=DAILY_CRON,
    execution_timezone="UTC",
    job=weekly_kpi_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 02:00 UTC: inactivity recalculation with as_of = the scheduled time.",
)
def weekly_kpi_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    as_of = as_of_iso(context.scheduled_execution_time)
    return dg.RunRequest(
        run_key=f"weekly_kpi_daily:{as_of}",
        run_config=run_config(as_of=as_of),
        tags={"analytics_platform/trigger": "schedule"},
    )
