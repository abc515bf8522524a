"""The posthog domain's Definitions (resources come from the top level)."""

from __future__ import annotations

import dagster as dg

from analytics_platform.posthog.assets import SOURCE_SPECS, persons, sessions
from analytics_platform.posthog.schedules import posthog_daily_job, posthog_daily_schedule

defs = dg.Definitions(
    assets=[*SOURCE_SPECS, sessions, persons],
    jobs=[posthog_daily_job],
    schedules=[posthog_daily_schedule],
)
