"""Asset checks of ``app_db/weekly_kpi`` (run after each materialization of the job)."""

from __future__ import annotations

import dagster as dg

from analytics_platform.kpis.assets import WEEKLY_KPI_KEY
from analytics_platform.kpis.store import latest_recalc_run, ps_range_of_week
from analytics_platform.resources.app_db import AppDatabase


@dg.asset_check(
    asset=WEEKLY_KPI_KEY,
    name="ps_in_unit_interval",
    description="In the week of the latest recalculation every P and S in kpis is a JSON number "
    "in [0, 1] (whoever wrote it).",
)
def ps_in_unit_interval(app_db: AppDatabase) -> dg.AssetCheckResult:
    with app_db.connect() as conn:
        run = latest_recalc_run(conn)
        if run is None:
            return dg.AssetCheckResult(passed=True, metadata={"note": "no recalculation recorded yet"})
        row = ps_range_of_week(conn, run["week_start"])
    bad = int(row.bad_p) + int(row.bad_s)
    return dg.AssetCheckResult(
        passed=bad == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "week_start": run["week_start"].isoformat(),
            "rows_in_week": int(row.rows_in_week),
            "bad_P": int(row.bad_p),
            "bad_S": int(row.bad_s),
            "examples": dg.MetadataValue.json(list(row.bad_examples or [])),
        },
    )


@dg.asset_check(
    asset=WEEKLY_KPI_KEY,
    name="no_failed_users",
    description="The latest recalculation failed no user (a failed user has a NaN or "
    "out-of-range exam score; see the run's log and failed_users metadata).",
)
def no_failed_users(app_db: AppDatabase) -> dg.AssetCheckResult:
    with app_db.connect() as conn:
        run = latest_recalc_run(conn)
    if run is None:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no recalculation recorded yet"})
    return dg.AssetCheckResult(
        passed=int(run["failed"]) == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "run_id": run["run_id"],
            "as_of": run["as_of"].isoformat(),
            "processed": int(run["processed"]),
            "failed": int(run["failed"]),
        },
    )


ASSET_CHECKS = [ps_in_unit_interval, no_failed_users]
