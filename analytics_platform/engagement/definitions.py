"""Engagement domain: Firestore events -> engagement signals and goal milestones (PostgreSQL)."""

from __future__ import annotations

import dagster as dg

from analytics_platform.engagement.assets import ASSETS
from analytics_platform.engagement.schedules import engagement_daily, engagement_daily_job

defs = dg.Definitions(
    assets=ASSETS,
    jobs=[engagement_daily_job],
    schedules=[engagement_daily],
)
