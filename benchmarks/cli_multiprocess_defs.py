"""The platform's definitions with Dagster's multiprocess executor (a subprocess per step):
the baseline of ``bench_cli_latency``.  The module holds one ``Definitions`` object
(``defs``); the platform's is reached through its module, not bound at module level."""

import dagster as dg

import analytics_platform.definitions as platform

defs = dg.Definitions(
    assets=platform.defs.assets,
    asset_checks=platform.defs.asset_checks,
    jobs=platform.defs.jobs,
    schedules=platform.defs.schedules,
    sensors=platform.defs.sensors,
    resources=platform.defs.resources,
    executor=dg.multiprocess_executor,
)
