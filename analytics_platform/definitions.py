"""The single Dagster ``Definitions`` of the analytics_platform code location.

Each domain package exports its own ``defs`` (assets, checks, jobs, schedules, sensors);
they are merged here, explicitly (modules, not their ``defs`` names: the loader wants one
``Definitions`` object at module level), with the resources that ``build_resources`` picks for
``ANALYTICS_ENV``.

Steps run in the run's own process (``in_process_executor``): a run is already isolated by
the run launcher (its own process locally, its own pod on Kubernetes), every job here is a
chain of one to three dependent steps, and a subprocess per step re-imported the whole code
location (seconds per step from the CLI for no gain).

Every asset carries code references (``dagster/code_references``: the file and line of its
definition, shown in the UI); with ``CODE_REFERENCES_GIT_URL`` set (production) they link to
that repository at ``CODE_REFERENCES_GIT_REF``.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from analytics_platform.cohorts import definitions as cohorts
from analytics_platform.engagement import definitions as engagement
from analytics_platform.kpis import definitions as kpis
from analytics_platform.mixpanel import definitions as mixpanel
from analytics_platform.ops import definitions as ops
from analytics_platform.posthog import definitions as posthog
from analytics_platform.resources import build_resources
from analytics_platform.settings import get_settings


def with_code_references(assets: list, git_url: str | None, git_ref: str) -> list:
    """Assets with their source file and line, linked to ``git_url`` at ``git_ref`` if set."""
    referenced = dg.with_source_code_references(assets)
    if not git_url:
        return list(referenced)
    return list(
        dg.link_code_references_to_git(
            assets_defs=referenced,
            git_url=git_url,
            git_branch=git_ref,
            file_path_mapping=dg.AnchorBasedFilePathMapping(
                local_file_anchor=Path(__file__), file_anchor_path_in_repository="analytics_platform/definitions.py"
            ),
        )
    )


def merged_definitions() -> dg.Definitions:
    """The six domains' definitions with the resources and the executor (no code references)."""
    return dg.Definitions.merge(
        mixpanel.defs,
        cohorts.defs,
        posthog.defs,
        engagement.defs,
        kpis.defs,
        ops.defs,
        dg.Definitions(resources=build_resources(), executor=dg.in_process_executor),
    )


def build_definitions() -> dg.Definitions:
    """The code location's ``Definitions``: every asset with its code references."""
    merged, settings = merged_definitions(), get_settings()
    return dg.Definitions(
        assets=with_code_references(
            list(merged.assets or []), settings.code_references_git_url, settings.code_references_git_ref
        ),
        asset_checks=merged.asset_checks,
        jobs=merged.jobs,
        schedules=merged.schedules,
        sensors=merged.sensors,
        resources=merged.resources,
        executor=merged.executor,
    )


defs = build_definitions()
