"""Mixpanel domain: raw events ingestion and event-spike alerts."""

from __future__ import annotations

import dagster as dg

from analytics_platform.mixpanel.assets import ASSETS
from analytics_platform.mixpanel.checks import ASSET_CHECKS
from analytics_platform.mixpanel.migration_job import JOBS as MIGRATION_JOBS
from analytics_platform.mixpanel.schedules import JOBS, SCHEDULES

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=ASSET_CHECKS,
    jobs=[*JOBS, *MIGRATION_JOBS],
    schedules=SCHEDULES,
)
