"""Assets of the state-loss temp users cohort (specs/temp_users.md).

``peerplay/state_loss_temp_users``: detection over the raw Mixpanel events into the cohort
table, the active-yesterday check with its daily Slack summary, and opt-in removal.
``mixpanel/state_loss_temp_user_cohort``: marks the unsynced temp users' Mixpanel profiles.
Both write start/end rows to ``{COHORT_DATASET}.process_audit_log``.
"""

import datetime as dt
from typing import Optional

import dagster as dg
from pydantic import Field

from analytics_platform.cohorts import rules, store
from analytics_platform.cohorts.store import CohortStore
from analytics_platform.common import parse_as_of
from analytics_platform.resources.mixpanel import MixpanelService
from analytics_platform.resources.slack import SlackService
from analytics_platform.cohorts.tables import TEMP_USERS_SCHEMA
from analytics_platform.resources.warehouse import Warehouse, column_schema
from analytics_platform.settings import get_settings

GROUP = "cohorts"
OWNERS = ["team:data-platform"]
EVENTS_KEY = dg.AssetKey(["mixpanel_data", "mixpanel_events"])
TEMP_USERS_KEY = dg.AssetKey(["peerplay", "state_loss_temp_users"])
COHORT_KEY = dg.AssetKey(["mixpanel", "state_loss_temp_user_cohort"])
ACTIVE_CHECK = "active_yesterday"


class TempUsersConfig(dg.Config):
    as_of: Optional[str] = Field(
        default=None,
        description="ISO-8601 UTC end of the detection window (exclusive); default: now.",
    )
    lookback_days: int = Field(
        default=rules.DEFAULT_LOOKBACK_DAYS,
        description="Privacy events in [as_of - lookback_days, as_of) are examined.",
    )
    remove_active: bool = Field(
        default=False,
        description=(
            "Delete temp users who were active yesterday from the table and $unset their "
            "Mixpanel marker (recorded in the audit log)."
        ),
    )
    max_ingestion_lag_minutes: int = Field(
        default=rules.DEFAULT_MAX_INGESTION_LAG_MINUTES,
        description=(
            "The run fails when the events table is loaded to more than this before as_of "
            "(ingestion behind): temp users would be missed, not reported as zero."
        ),
    )


def events_refreshed_at(instance: dg.DagsterInstance, as_of: dt.datetime) -> Optional[dt.datetime]:
    """When the ``mixpanel_events`` partition holding the instant before ``as_of`` was last
    materialized (None when never): the refresh of a quiet day writes no row."""
    day = (as_of - dt.timedelta(microseconds=1)).date().isoformat()
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=EVENTS_KEY, asset_partitions=[day]), limit=1
    ).records
    return dt.datetime.fromtimestamp(records[0].timestamp, tz=dt.timezone.utc) if records else None


@dg.asset(
    key=TEMP_USERS_KEY,
    deps=[EVENTS_KEY],
    group_name=GROUP,
    kinds={"bigquery", "sql"},
    owners=OWNERS,
    tags={"domain": "cohorts"},
    metadata={"dagster/column_schema": column_schema(TEMP_USERS_SCHEMA)},
    check_specs=[
        dg.AssetCheckSpec(
            ACTIVE_CHECK,
            asset=TEMP_USERS_KEY,
            description=(
                "WARN when temp users were active yesterday (UTC, relative to as_of) under the "
                "same distinct_id after their restore: they may not be temporary after all."
            ),
        )
    ],
)
def state_loss_temp_users(
    context: dg.AssetExecutionContext,
    config: TempUsersConfig,
    warehouse: Warehouse,
    mixpanel: MixpanelService,
    slack: SlackService,
) -> dg.MaterializeResult:
    """State-loss temp users: Android installs that opened with a temporary identity
    (`impression_privacy`) and restored their real state by device id within 120 s.

    Reads `mixpanel_data.mixpanel_events` (one set-based query, `sql/cohorts/detect_temp_users.sql`)
    over privacy events in `[as_of - lookback_days, as_of)`. Writes new temp users into
    `{COHORT_DATASET}.state_loss_temp_users` (insert-if-absent on `distinct_id`), start/end rows
    into `{COHORT_DATASET}.process_audit_log`, and — once per day — a Slack summary of temp users
    who were active yesterday (the `active_yesterday` check, WARN). With `remove_active: true`
    those users are moved to `state_loss_temp_users_removed` and their Mixpanel marker is unset.

    Fresh data only: the run fails, naming how far the events are loaded, when ingestion is
    more than `max_ingestion_lag_minutes` (60) behind `as_of` - it never reports zero temp users
    from a stale table.

    Re-run safety: a user already in the table (or removed on purpose) is never inserted again,
    so repeated or overlapping runs (any `as_of`) add nothing twice; existing rows keep their
    `detected_at` and `mixpanel_synced_at`; the Slack summary is sent once per day (delivery is
    recorded in the audit log); removal is idempotent.
    """
    as_of = parse_as_of(config.as_of)
    result = store.detect_temp_users(
        CohortStore(warehouse, get_settings()),
        mixpanel,
        slack,
        run_id=context.run.run_id,
        as_of=as_of,
        lookback_days=config.lookback_days,
        remove_active=config.remove_active,
        max_ingestion_lag=dt.timedelta(minutes=config.max_ingestion_lag_minutes),
        events_refreshed_at=events_refreshed_at(context.instance, as_of),
        log=context.log,
    )
    check = dg.AssetCheckResult(
        check_name=ACTIVE_CHECK,
        passed=result.active_check_passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=result.active_check_description,
        metadata=result.active_check_metadata(),
    )
    return dg.MaterializeResult(metadata=result.metadata(), check_results=[check])


@dg.asset(
    key=COHORT_KEY,
    deps=[TEMP_USERS_KEY],
    group_name=GROUP,
    kinds={"mixpanel", "python"},
    owners=OWNERS,
    tags={"domain": "cohorts"},
)
def state_loss_temp_user_cohort(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    mixpanel: MixpanelService,
) -> dg.MaterializeResult:
    """Mixpanel profiles of the state-loss temp users carry the cohort marker.

    Reads the temp users whose `mixpanel_synced_at` is NULL from
    `{COHORT_DATASET}.state_loss_temp_users`; sends `$set` of
    `state_loss_temp_user_cohort_marker` = COHORT_MARKER and `state_loss_last_updated`
    (ISO-8601 UTC) through `POST /engage` in batches of at most 2000 (without a project token
    locally: the outbox `$ANALYTICS_DATA_DIR/outbox/mixpanel_engage.jsonl`); writes
    `mixpanel_synced_at` for the accepted batches (set-based UPDATE) and start/end rows into
    `{COHORT_DATASET}.process_audit_log`.

    Re-run safety: only unsynced users are sent, so a re-run after success sends nothing; a
    rejected batch (`{"status": 0}`, a final HTTP error or retries exhausted) leaves only its
    users unsynced for the next run, and `$set` of the same values is idempotent in Mixpanel.
    """
    settings = get_settings()
    result = store.mark_cohort(
        CohortStore(warehouse, settings),
        mixpanel,
        cohort_marker=settings.cohort_marker,
        run_id=context.run.run_id,
        log=context.log,
    )
    return dg.MaterializeResult(metadata=result.metadata())
