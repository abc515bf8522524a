"""Runs the demo: every domain's ``seed`` then its ``steps`` through Dagster."""

from __future__ import annotations

from typing import Optional

import dagster as dg

from analytics_platform.demo import DemoContext, DemoStep, domain_modules, domain_name
from analytics_platform.settings import get_settings


def _instance() -> dg.DagsterInstance:
    """The instance under DAGSTER_HOME (so runs show in `dagster dev`), else ephemeral."""
    if get_settings().dagster_home:
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def materialize_step(
    defs: dg.Definitions, step: DemoStep, instance: dg.DagsterInstance, log_level: str = "WARNING"
) -> dg.ExecuteInProcessResult:
    """Materialize one demo step (a selection, optionally one partition or a range)."""
    tags = {"analytics_platform/source": "demo"}
    if step.partition_range:
        tags["dagster/asset_partition_range_start"] = step.partition_range[0]
        tags["dagster/asset_partition_range_end"] = step.partition_range[1]
    selection = dg.AssetSelection.assets(*[dg.AssetKey(k.split("/")) for k in step.selection])
    # Dagster's console logger at WARNING: the demo prints its own one-line summaries.
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}, **(step.run_config or {})}
    return dg.materialize(
        assets=[*defs.assets, *(defs.asset_checks or [])],
        selection=selection,
        partition_key=step.partition_key,
        run_config=run_config,
        resources=defs.resources,
        instance=instance,
        tags=tags,
        raise_on_error=True,
    )


def _summarise(result: dg.ExecuteInProcessResult) -> list[str]:
    lines = []
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization  # DagsterEvent.asset_materialization is a method in 1.13
        meta = {k: getattr(v, "value", v) for k, v in (mat.metadata or {}).items()}
        counts = ", ".join(
            f"{k.split('/')[-1]}={v}"
            for k, v in meta.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        )
        part = f" [{mat.partition}]" if mat.partition else ""
        lines.append(f"  materialized {mat.asset_key.to_user_string()}{part}: {counts}")
    return lines


def run_demo(seed_only: bool = False, domains: Optional[list[str]] = None, verbose: bool = False) -> int:
    from analytics_platform.definitions import defs
    from analytics_platform.resources import build_resources

    settings = get_settings()
    if settings.is_prod:
        raise SystemExit("The demo writes synthetic data: run it with ANALYTICS_ENV=local only.")
    ctx = DemoContext(settings=settings, resources=build_resources(settings, secrets_as_env_vars=False))
    modules = [m for m in domain_modules() if not domains or domain_name(m) in domains]
    print(f"Demo data under {settings.data_dir.resolve()} (demo day {ctx.demo_date})")
    for module in modules:
        module.seed(ctx)
        print(f"seeded {domain_name(module)}")
    if seed_only:
        return 0
    instance = _instance()
    for module in modules:
        for step in module.steps(ctx):
            print(f"{domain_name(module)}: {step.description or ', '.join(step.selection)}")
            result = materialize_step(defs, step, instance, "DEBUG" if verbose else "WARNING")
            for line in _summarise(result):
                print(line)
    print("Demo complete.")
    return 0
