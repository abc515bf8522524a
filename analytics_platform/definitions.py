"""The single Dagster ``Definitions`` of the analytics_platform code location.

Each domain package exports its own ``defs`` (assets, checks, jobs, schedules, sensors);
they are merged here, explicitly, with the resources that ``build_resources`` picks for
``ANALYTICS_ENV``.
"""

from __future__ import annotations

import dagster as dg

from analytics_platform.cohorts.definitions import defs as cohorts_defs
from analytics_platform.engagement.definitions import defs as engagement_defs
from analytics_platform.kpis.definitions import defs as kpis_defs
from analytics_platform.mixpanel.definitions import defs as mixpanel_defs
from analytics_platform.ops.definitions import defs as ops_defs
from analytics_platform.posthog.definitions import defs as posthog_defs
from analytics_platform.resources import build_resources

defs = dg.Definitions.merge(
    mixpanel_defs,
    cohorts_defs,
    posthog_defs,
    engagement_defs,
    kpis_defs,
    ops_defs,
    dg.Definitions(resources=build_resources()),
)
