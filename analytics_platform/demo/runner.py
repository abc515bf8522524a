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
    # Dagster's console logger is quiet: the demo prints its own summaries, and the run's
    # warnings and errors labelled (see ``_labelled_logs``).
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


def _checks(result: dg.ExecuteInProcessResult) -> list[str]:
    lines = []
    for evaluation in result.get_asset_check_evaluations():
        state = "passed" if evaluation.passed else f"FAILED ({evaluation.severity.value})"
        lines.append(f"  check {evaluation.asset_key.to_user_string()} {evaluation.check_name}: {state}")
    return lines


def _labelled_logs(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance, step: DemoStep) -> list[str]:
    """The run's WARNING/ERROR log lines, each labelled: a fault the demo planted on purpose
    (``step.planted``), or unexpected."""
    import logging

    lines = []
    for entry in instance.all_logs(result.run_id):
        if entry.level < logging.WARNING or entry.dagster_event is not None:
            continue
        label = "planted" if step.planted else "UNEXPECTED"
        lines.append(f"  {logging.getLevelName(entry.level)} ({label}): {entry.user_message.splitlines()[0][:160]}")
    return lines


def _next_steps(settings) -> list[str]:
    data = settings.data_dir.resolve()
    return [
        "Next steps:",
        "  make dev      the Dagster UI on http://localhost:3000 (these runs, the asset graph, schedules, sensors)",
        f"  warehouse     {settings.duckdb_path.resolve()} (DuckDB; schemas named after the BigQuery datasets)",
        f"  outboxes      {data / 'outbox'} (Slack alerts, Mixpanel profile updates that would have been sent)",
        f"  app database  embedded PostgreSQL under {data / 'postgres'} (still running; `make stop` stops it)",
    ]


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
            for fault in step.planted:
                print(f"  planted fault: {fault}")
            result = materialize_step(defs, step, instance, "DEBUG" if verbose else "CRITICAL")
            for line in [*_summarise(result), *_checks(result), *_labelled_logs(result, instance, step)]:
                print(line)
    print("Demo complete.")
    print("\n".join(_next_steps(settings)))
    return 0
