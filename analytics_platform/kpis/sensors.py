"""Recalculate when ``weekly_kpi`` is written by something else (the daily KPI batch).

The detection is :func:`analytics_platform.kpis.store.evaluate_external_writes` (its cursor
and the rule in ``rules.py``); this sensor never fires on the asset's own writes (they are
recognised by their recorded watermark).
"""

from __future__ import annotations

import dagster as dg

from analytics_platform.common import utc_now
from analytics_platform.kpis import store
from analytics_platform.kpis.assets import as_of_iso, run_config
from analytics_platform.kpis.schedules import WEEKLY_KPI_JOB, weekly_kpi_job
from analytics_platform.resources.app_db import AppDatabase

ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(
    name="weekly_kpi_external_write_sensor",
    job=weekly_kpi_job,
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts a P/S recalculation when weekly_kpi rows are written by another writer "
    "(e.g. the daily KPI batch), so inactive users' P/S are not left overwritten. Ignores the "
    "asset's own writes.",
)
def weekly_kpi_external_write_sensor(context: dg.SensorEvaluationContext, app_db: AppDatabase):
    active = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=WEEKLY_KPI_JOB, statuses=ACTIVE_STATUSES), limit=1
    )
    if active:
        # Keep the cursor: what is found now is looked at again once that run is done.
        return dg.SkipReason(f"a {WEEKLY_KPI_JOB} run is queued or in progress ({active[0].run_id})")
    decision = store.evaluate_external_writes(app_db.get_engine(), context.cursor)
    if decision.cursor is not None:
        context.update_cursor(decision.cursor.to_json())
    if not decision.fire:
        return dg.SkipReason(decision.reason)
    context.log.info(f"weekly_kpi written by another writer: {decision.reason}")
    hi = decision.cursor.hi.isoformat() if decision.cursor and decision.cursor.hi else "none"
    return dg.RunRequest(
        run_key=f"weekly_kpi_external:{hi}:{decision.cursor.count if decision.cursor else 0}",
        run_config=run_config(as_of=as_of_iso(utc_now())),
        tags={"analytics_platform/trigger": "weekly_kpi_external_write"},
    )
