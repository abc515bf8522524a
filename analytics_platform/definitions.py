"""The single Dagster ``Definitions`` of the analytics_platform code location.

Each domain package exports its own ``defs`` (assets, checks, jobs, schedules, sensors);
they are merged here with the resources that ``build_resources`` picks for
``ANALYTICS_ENV``.
"""

from __future__ import annotations

import importlib

import dagster as dg

from analytics_platform.resources import build_resources

DOMAINS = ("mixpanel", "cohorts", "posthog", "engagement", "kpis", "ops")


def _domain_defs() -> list[dg.Definitions]:
    found = []
    for domain in DOMAINS:
        name = f"analytics_platform.{domain}.definitions"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real import error inside the domain: surface it
                raise
            continue
        found.append(module.defs)
    return found


defs = dg.Definitions.merge(
    *_domain_defs(),
    dg.Definitions(resources=build_resources()),
)
