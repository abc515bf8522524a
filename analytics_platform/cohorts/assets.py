"""Assets of the state-loss temp users cohort (specs/temp_users.md).

``peerplay/state_loss_temp_users``: detection over the raw Mixpanel events into the cohort
table, the active-yesterday check with its daily Slack summary, and opt-in removal.
``mixpanel/state_loss_temp_user_cohort``: marks the unsynced temp users' Mixpanel profiles.
Both write start/end rows to ``{COHORT_DATASET}.process_audit_log``.
"""

import datetime as dt
from typing import Any, Optional

import dagster as dg
from pydantic import Field

from analytics_platform.cohorts import temp_users as logic
from analytics_platform.cohorts.store import CohortStore
from analytics_platform.common import parse_as_of, utc_now
from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform.resources.slack import SlackResource
from analytics_platform.resources.warehouse import Warehouse
from analytics_platform.settings import get_settings, redact

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
        default=logic.DEFAULT_LOOKBACK_DAYS,
        description="Privacy events in [as_of - lookback_days, as_of) are examined.",
    )
    remove_active: bool = Field(
        default=False,
        description=(
            "Delete temp users who were active yesterday from the table and $unset their "
            "Mixpanel marker (recorded in the audit log)."
        ),
    )


def _run_id(context: dg.AssetExecutionContext) -> str:
    return context.run.run_id


def _error_text(exc: BaseException) -> str:
    try:
        return redact(f"{type(exc).__name__}: {exc}")[:1000]
    except Exception:  # noqa: BLE001 - an invalid environment must not hide the error
        return type(exc).__name__


def _audit_failure(context: dg.AssetExecutionContext, store: CohortStore, run_id: str, step: str, details: dict) -> None:
    """Write a 'failed' audit row without masking the original error if that fails too."""
    try:
        store.audit(run_id, step, "failed", details)
    except Exception as exc:  # noqa: BLE001
        context.log.warning(f"Could not write the audit row {step}: {_error_text(exc)}")


def _active_metadata(day: dt.date, active: list[logic.ActiveUser], removed: int) -> dict[str, Any]:
    sample = [u.distinct_id for u in active[: logic.SUMMARY_SAMPLE]]
    return {
        "day": day.isoformat(),
        "active_yesterday": len(active),
        "removed": removed,
        "distinct_ids": dg.MetadataValue.json(sample),
        "more": max(0, len(active) - len(sample)),
    }


@dg.asset(
    key=TEMP_USERS_KEY,
    deps=[EVENTS_KEY],
    group_name=GROUP,
    kinds={"bigquery", "sql"},
    owners=OWNERS,
    tags={"domain": "cohorts"},
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
    mixpanel: MixpanelResource,
    slack: SlackResource,
) -> dg.MaterializeResult:
    """State-loss temp users: Android installs that opened with a temporary identity
    (`impression_privacy`) and restored their real state by device id within 120 s.

    Reads `mixpanel_data.mixpanel_events` (one set-based query, `sql/cohorts/detect_temp_users.sql`)
    over privacy events in `[as_of - lookback_days, as_of)`. Writes new temp users into
    `{COHORT_DATASET}.state_loss_temp_users` (insert-if-absent on `distinct_id`), start/end rows
    into `{COHORT_DATASET}.process_audit_log`, and — once per day — a Slack summary of temp users
    who were active yesterday (the `active_yesterday` check, WARN). With `remove_active: true`
    those users are moved to `state_loss_temp_users_removed` and their Mixpanel marker is unset.

    Re-run safety: a user already in the table (or removed on purpose) is never inserted again,
    so repeated or overlapping runs (any `as_of`) add nothing twice; existing rows keep their
    `detected_at` and `mixpanel_synced_at`; the Slack summary is sent once per day (delivery is
    recorded in the audit log); removal is idempotent.
    """
    settings = get_settings()
    store = CohortStore(warehouse, settings)
    run_id = _run_id(context)
    as_of = parse_as_of(config.as_of)
    try:
        window = logic.detection_window(as_of, config.lookback_days)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from None
    store.ensure_audit_table()
    start_details = {
        "as_of": as_of,
        "lookback_days": config.lookback_days,
        "window_start": window.window_start,
        "remove_active": config.remove_active,
    }
    store.audit(run_id, f"start_{logic.STEP_DETECT}", "started", start_details)
    try:
        if not store.events_table_exists():
            raise dg.Failure(
                f"Events table {store.events_dataset}.{store.events_table} does not exist: "
                "materialize mixpanel_data/mixpanel_events first (or check BIGQUERY_DATASET / BIGQUERY_TABLE)."
            )
        store.ensure_tables()
        detection = store.detect_and_insert(window, detected_at=utc_now())
        context.log.info(
            f"Temp users in [{window.window_start.isoformat()}, {as_of.isoformat()}): "
            f"{detection.detected} found, {detection.inserted} new"
        )

        # Active yesterday: the check, the optional removal and the daily summary.
        activity = logic.yesterday_window(as_of)
        active_rows = store.active_yesterday(activity)
        active = logic.active_users_from_rows(active_rows.to_dict("records"))
        removed, unset_failed = 0, 0
        if config.remove_active and active:
            removed, unset_failed = _remove_active(context, store, mixpanel, active_rows, run_id)
        stats = store.stats()
        summary = _daily_summary(
            context,
            store,
            slack,
            activity.day,
            active,
            cohort_size=stats.row_count + removed,
            removed=removed,
            remove_active=config.remove_active,
            run_id=run_id,
        )

        remaining = len(active) - removed
        check = dg.AssetCheckResult(
            check_name=ACTIVE_CHECK,
            passed=remaining == 0,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"{len(active)} temp user(s) active on {activity.day.isoformat()}; {removed} removed"
                if active
                else f"No temp user was active on {activity.day.isoformat()}"
            ),
            metadata={**_active_metadata(activity.day, active, removed), "slack_summary": summary},
        )
        counts = {
            "detected": detection.detected,
            "inserted": detection.inserted,
            "already_known": detection.already_known,
            "previously_removed": detection.previously_removed,
            "active_yesterday": len(active),
            "removed": removed,
            "unset_failed": unset_failed,
            "unsynced": stats.unsynced,
        }
        store.audit(run_id, f"end_{logic.STEP_DETECT}", "success", {**start_details, **counts, "slack_summary": summary})
    except BaseException as exc:
        _audit_failure(context, store, run_id, f"end_{logic.STEP_DETECT}", {**start_details, "error": _error_text(exc)})
        raise
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stats.row_count,
            **counts,
            "as_of": logic.iso_utc(as_of),
            "window_start": logic.iso_utc(window.window_start),
            "lookback_days": config.lookback_days,
            "table": store.table_name,
        },
        check_results=[check],
    )


def _remove_active(
    context: dg.AssetExecutionContext,
    store: CohortStore,
    mixpanel: MixpanelResource,
    active_rows,
    run_id: str,
) -> tuple[int, int]:
    """Unset the marker of the marked ones, then move everyone whose unset did not fail."""
    started = {"users": len(active_rows)}
    store.audit(run_id, f"start_{logic.STEP_REMOVE}", "started", started)
    try:
        synced_mask = active_rows["mixpanel_synced_at"].notna()
        to_unset = [str(i) for i in active_rows.loc[synced_mask, "distinct_id"]]
        report = logic.send_in_batches(
            to_unset,
            lambda i: mixpanel.unset_update(i, logic.MARKER_PROPERTIES),
            mixpanel.engage,
        )
        failed = set(report.failed_ids)
        movable = active_rows[~active_rows["distinct_id"].astype(str).isin(failed)]
        removed = store.remove(movable, run_id, utc_now())
        if failed:
            context.log.warning(
                f"{len(failed)} active temp user(s) kept in the cohort: Mixpanel $unset failed "
                f"({'; '.join(report.errors[:3])}); a later run with remove_active retries them"
            )
        store.audit(
            run_id,
            f"end_{logic.STEP_REMOVE}",
            "success" if not failed else "partial",
            {
                **started,
                "removed": removed,
                "unset": len(report.succeeded_ids),
                "unset_failed": len(failed),
                "removed_ids": [str(i) for i in movable["distinct_id"]][:100],
                **{f"unset_{k}": v for k, v in report.as_details().items()},
            },
        )
        return removed, len(failed)
    except BaseException as exc:
        _audit_failure(context, store, run_id, f"end_{logic.STEP_REMOVE}", {**started, "error": _error_text(exc)})
        raise


def _daily_summary(
    context: dg.AssetExecutionContext,
    store: CohortStore,
    slack: SlackResource,
    day: dt.date,
    active: list[logic.ActiveUser],
    cohort_size: int,
    removed: int,
    remove_active: bool,
    run_id: str,
) -> str:
    """Post the active-yesterday summary once per day; returns what happened."""
    if not active:
        return "nothing to report"
    if store.summary_already_sent(day):
        return "already sent today"
    text, blocks = logic.summary_message(
        day, active, cohort_size, table=store.table_name, removed=removed, remove_active=remove_active
    )
    delivery = slack.post_message(text, blocks=blocks)
    details = {"day": day.isoformat(), "active": len(active), "removed": removed, "destination": delivery.destination}
    if delivery.delivered:
        store.audit(run_id, logic.STEP_SUMMARY, "sent", details)
        return f"sent to {delivery.destination}"
    store.audit(run_id, logic.STEP_SUMMARY, "failed", {**details, "error": delivery.error})
    context.log.warning(f"Active-yesterday summary not delivered ({delivery.error}); the next run retries it")
    return "not delivered"


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
    mixpanel: MixpanelResource,
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
    store = CohortStore(warehouse, settings)
    run_id = _run_id(context)
    store.ensure_audit_table()
    store.audit(run_id, f"start_{logic.STEP_MARK}", "started", {"engage": mixpanel.engage_mode})
    pending: list[str] = []
    synced = 0
    try:
        store.ensure_tables()
        ids = store.unsynced_ids()
        marked_at = utc_now().replace(microsecond=0)  # the value sent as state_loss_last_updated
        props = logic.marker_properties(settings.cohort_marker, marked_at)

        def remember(batch_ids: list[str]) -> None:
            nonlocal synced
            pending.extend(batch_ids)
            if len(pending) >= logic.SYNC_FLUSH_SIZE:
                synced += store.mark_synced(pending, marked_at)
                pending.clear()

        try:
            report = logic.send_in_batches(
                ids, lambda i: mixpanel.set_update(i, props), mixpanel.engage, on_success=remember
            )
        finally:
            if pending:  # never lose the record of batches Mixpanel accepted
                synced += store.mark_synced(pending, marked_at)
                pending.clear()
        details = {"unsynced_before": len(ids), "users_marked": len(report.succeeded_ids), **report.as_details()}
        if report.failed_batches:
            context.log.warning(
                f"{report.failed_batches} of {report.batches} /engage batch(es) failed; their "
                f"{len(report.failed_ids)} user(s) stay unsynced for the next run: {'; '.join(report.errors[:3])}"
            )
        if report.batches and report.failed_batches == report.batches:
            raise dg.Failure(
                f"Every /engage batch failed ({report.batches}); no temp user was marked. "
                f"First error: {report.errors[0] if report.errors else 'unknown'}"
            )
        store.audit(run_id, f"end_{logic.STEP_MARK}", "success", details)
    except BaseException as exc:
        _audit_failure(context, store, run_id, f"end_{logic.STEP_MARK}", {"synced": synced, "error": _error_text(exc)})
        raise
    stats = store.stats()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stats.row_count - stats.unsynced,  # profiles carrying the marker
            "users_marked": len(report.succeeded_ids),
            "users_failed": len(report.failed_ids),
            "batches": report.batches,
            "failures": report.failed_batches,
            "requests": report.requests,
            "destination": mixpanel.engage_mode,
            "still_unsynced": stats.unsynced,
            "cohort_marker": settings.cohort_marker,
            "state_loss_last_updated": props[logic.LAST_UPDATED_PROPERTY],
        }
    )
