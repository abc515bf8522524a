"""Cohorts domain: state-loss temp users and their Mixpanel profile marker."""

from __future__ import annotations

import dagster as dg

from analytics_platform.cohorts.assets import state_loss_temp_user_cohort, state_loss_temp_users
from analytics_platform.cohorts.checks import ASSET_CHECKS
from analytics_platform.cohorts.schedules import temp_users_cohort_daily, temp_users_cohort_job

defs = dg.Definitions(
    assets=[state_loss_temp_users, state_loss_temp_user_cohort],
    asset_checks=ASSET_CHECKS,
    jobs=[temp_users_cohort_job],
    schedules=[temp_users_cohort_daily],
)
