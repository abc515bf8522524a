"""Running the kpis assets through Dagster in tests (real resources, ephemeral instance)."""

from __future__ import annotations

from typing import Any, Optional

import dagster as dg

from analytics_platform.kpis.assets import SOURCE_SPECS, WEEKLY_KPI_KEY, run_config, weekly_kpi
from analytics_platform.kpis.checks import ASSET_CHECKS
from analytics_platform.resources.local.slack_outbox import LocalSlack
from analytics_platform.resources.slack import SlackService


def slack_outbox(tmp_path) -> LocalSlack:
    return LocalSlack(outbox_path=str(tmp_path / "outbox" / "slack.jsonl"))


def materialize(
    app_db,
    slack: SlackService,
    instance: Optional[dg.DagsterInstance] = None,
    raise_on_error: bool = True,
    **config: Any,
) -> dg.ExecuteInProcessResult:
    instance = instance or dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [*SOURCE_SPECS, weekly_kpi, *ASSET_CHECKS],
        selection=dg.AssetSelection.assets(WEEKLY_KPI_KEY) | dg.AssetSelection.checks_for_assets(WEEKLY_KPI_KEY),
        resources={"app_db": app_db, "slack": slack},
        run_config=run_config(**config),
        instance=instance,
        raise_on_error=raise_on_error,
    )
    _INSTANCES[result.run_id] = instance
    return result


_INSTANCES: dict[str, dg.DagsterInstance] = {}


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    events = result.get_asset_materialization_events()
    assert len(events) == 1, events
    return {k: getattr(v, "value", v) for k, v in events[0].event_specific_data.materialization.metadata.items()}


def observations(result: dg.ExecuteInProcessResult) -> list[dict[str, Any]]:
    return [
        {k: getattr(v, "value", v) for k, v in e.asset_observation_data.asset_observation.metadata.items()}
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION
    ]


def log_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """Every log line of the run (context.log messages included), from the event log."""
    logs = _INSTANCES[result.run_id].all_logs(result.run_id)
    return [e.user_message for e in logs if e.user_message]


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}
