"""The single Dagster ``Definitions`` of the analytics_platform code location.

Each domain package exports its own ``defs`` (assets, checks, jobs, schedules, sensors);
they are merged here, explicitly (modules, not their ``defs`` names: the loader wants one
``Definitions`` object at module level), with the resources that ``build_resources`` picks for
``ANALYTICS_ENV``.

Steps run in the run's own process (``in_process_executor``): a run is already isolated by
the run launcher (its own process locally, its own pod on Kubernetes), every job here is a
chain of one to three dependent steps, and a subprocess per step re-imported the whole code
location (seconds per step from the CLI for no gain).
"""

from __future__ import annotations

import dagster as dg

from analytics_platform.cohorts import definitions as cohorts
from analytics_platform.engagement import definitions as engagement
from analytics_platform.kpis import definitions as kpis
from analytics_platform.mixpanel import definitions as mixpanel
from analytics_platform.ops import definitions as ops
from analytics_platform.posthog import definitions as posthog
from analytics_platform.resources import build_resources

defs = dg.Definitions.merge(
    mixpanel.defs,
    cohorts.defs,
    posthog.defs,
    engagement.defs,
    kpis.defs,
    ops.defs,
    dg.Definitions(resources=build_resources(), executor=dg.in_process_executor),
)
