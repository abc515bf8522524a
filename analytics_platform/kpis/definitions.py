"""KPIs domain: inactivity detection and P/S recalculation in weekly_kpi (no resources here)."""

from __future__ import annotations

import dagster as dg

from analytics_platform.kpis.assets import SOURCE_SPECS, weekly_kpi
from analytics_platform.kpis.checks import ASSET_CHECKS
from analytics_platform.kpis.schedules import weekly_kpi_daily, weekly_kpi_job
from analytics_platform.kpis.sensors import weekly_kpi_external_write_sensor

defs = dg.Definitions(
    assets=[*SOURCE_SPECS, weekly_kpi],
    asset_checks=ASSET_CHECKS,
    jobs=[weekly_kpi_job],
    schedules=[weekly_kpi_daily],
    sensors=[weekly_kpi_external_write_sensor],
)
