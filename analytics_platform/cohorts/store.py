"""Warehouse side of the temp users cohort, and the work of each of its assets.

Every statement is a file under ``sql/cohorts/`` run through the ``Warehouse`` resource
(BigQuery in production, DuckDB locally).  ``CohortStore`` holds the statements and the
audit log (``audited_run``: the start/end rows around a step, written once);
``detect_temp_users`` and ``mark_cohort`` do one asset's work each and return a result with
``.metadata()``, so the assets stay thin.
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import dagster as dg
import pandas as pd

from analytics_platform.cohorts import rules
from analytics_platform.cohorts import tables as T
from analytics_platform.common import read_sql, render_sql, strip_sql_comments, to_int, utc_now
from analytics_platform.settings import Settings, redact

# Partition-pruning fragments of the events queries (sql/cohorts/prune_*.sql).
PRUNING_FRAGMENTS = ("prune_privacy_days", "prune_restore_days", "prune_active_day", "prune_recent_days")
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class CohortStats:
    row_count: int
    unsynced: int
    duplicate_rows: int
    empty_ids: int


@dataclass(frozen=True)
class Detection:
    candidates: pd.DataFrame  # one row per temp user found in the window
    inserted: int

    @property
    def detected(self) -> int:
        return len(self.candidates)

    @property
    def already_known(self) -> int:
        return int(self.candidates["already_known"].fillna(False).astype(bool).sum()) if self.detected else 0

    @property
    def previously_removed(self) -> int:
        return int(self.candidates["removed_before"].fillna(False).astype(bool).sum()) if self.detected else 0


@dataclass
class AuditedStep:
    """What ``CohortStore.audited_run`` writes when the step ends: on success the
    ``end_<step>`` row with ``status`` and ``details`` (set by the step's body), on failure
    the ``end_<step>`` row ``failed`` with ``failure_details`` plus the error."""

    status: str = "success"
    details: dict[str, Any] = field(default_factory=dict)
    failure_details: dict[str, Any] = field(default_factory=dict)


def error_text(exc: BaseException) -> str:
    """The error as recorded in the audit log (secrets redacted, at most 1000 characters)."""
    try:
        return redact(f"{type(exc).__name__}: {exc}")[:1000]
    except Exception:  # noqa: BLE001 - an invalid environment must not hide the error
        return type(exc).__name__


def events_query_sql(name: str, has_event_date: bool, **identifiers: str) -> str:
    """``sql/<name>.sql`` rendered with ``identifiers``; its partition-pruning fragments
    (event_date predicates that only let BigQuery skip partitions) are formatted in when
    the events table has an ``event_date`` column, else left empty."""
    fragments = {
        f: (strip_sql_comments(read_sql(f"cohorts/{f}")).strip() if has_event_date else "")
        for f in PRUNING_FRAGMENTS
    }
    return render_sql(read_sql(name), fragments=fragments, **identifiers)


class CohortStore:
    """The cohort's tables in one warehouse, named from the settings."""

    def __init__(self, warehouse: Any, settings: Settings) -> None:
        self.warehouse = warehouse
        self.events_dataset = settings.bigquery_dataset
        self.events_table = settings.bigquery_table
        self.dataset = settings.cohort_dataset
        self._events_columns: Optional[list[str]] = None

    # identifiers for render_sql
    @property
    def _ids(self) -> dict[str, str]:
        return {
            "events_dataset": self.events_dataset,
            "events_table": self.events_table,
            "cohort_dataset": self.dataset,
            "cohort_table": T.TEMP_USERS_TABLE,
            "removed_table": T.REMOVED_TABLE,
            "audit_table": T.AUDIT_TABLE,
        }

    def _only(self, *names: str) -> dict[str, str]:
        ids = self._ids
        return {n: ids[n] for n in names}

    @property
    def table_name(self) -> str:
        return f"{self.dataset}.{T.TEMP_USERS_TABLE}"

    # ------------------------------------------------------------------ set-up
    def ensure_tables(self) -> None:
        self.warehouse.ensure_table(self.dataset, T.TEMP_USERS_TABLE, T.TEMP_USERS_SCHEMA)
        self.warehouse.ensure_table(self.dataset, T.REMOVED_TABLE, T.REMOVED_SCHEMA)

    def ensure_audit_table(self) -> None:
        self.warehouse.ensure_table(self.dataset, T.AUDIT_TABLE, T.AUDIT_SCHEMA)

    def events_table_exists(self) -> bool:
        return bool(self._columns_of_events())

    def require_events_table(self) -> None:
        if not self.events_table_exists():
            raise dg.Failure(
                f"Events table {self.events_dataset}.{self.events_table} does not exist: "
                "materialize mixpanel_data/mixpanel_events first (or check BIGQUERY_DATASET / BIGQUERY_TABLE)."
            )

    def events_loaded_until(self, since: dt.datetime) -> Optional[dt.datetime]:
        """How far the events table is loaded, from its rows since ``since`` only (recent
        partitions, not the whole history): the later of the last ``inserted_at`` and the
        latest event time (None when no row is that recent)."""
        row = self._events_query(
            "cohorts/select_events_loaded_until", {"since": since}, "events_dataset", "events_table"
        ).iloc[0]
        marks = [pd.Timestamp(v).to_pydatetime() for v in (row["last_inserted_at"], row["last_event_at"]) if pd.notna(v)]
        return max(marks) if marks else None

    def require_fresh_events(
        self, as_of: dt.datetime, max_lag: dt.timedelta, refreshed_at: Optional[dt.datetime] = None
    ) -> Optional[dt.datetime]:
        """Fail (never report zero temp users from a stale table) when ingestion is more
        than ``max_lag`` behind ``as_of``; return how far the table is loaded.

        ``refreshed_at``: when the events partition of as_of's day was last materialized
        (a quiet day adds no row, yet the refresh ran and the table is complete)."""
        since = as_of - max_lag - dt.timedelta(days=1)
        marks = [m for m in (self.events_loaded_until(since), refreshed_at) if m is not None]
        loaded_until = max(marks) if marks else None
        if rules.ingestion_is_behind(loaded_until, as_of, max_lag):
            last = loaded_until.isoformat() if loaded_until else f"nowhere (no event loaded since {since.isoformat()})"
            raise dg.Failure(
                f"Mixpanel events in {self.events_dataset}.{self.events_table} are loaded up to {last}, "
                f"more than {int(max_lag.total_seconds() // 60)} min before as_of {as_of.isoformat()}: "
                "temp users of this window would be missed. Refresh mixpanel_data/mixpanel_events "
                "(its 15-minute schedule, or materialize the days up to as_of) and re-run, or run "
                "with an earlier as_of.",
                metadata={"events_loaded_until": last, "as_of": as_of.isoformat()},
                allow_retries=False,
            )
        return loaded_until

    def _columns_of_events(self) -> list[str]:
        if not self._events_columns:
            self._events_columns = self.warehouse.table_columns(self.events_dataset, self.events_table)
        return self._events_columns

    def _events_query(self, name: str, params: dict[str, Any], *identifiers: str) -> pd.DataFrame:
        """Run a query over the events table (:func:`events_query_sql`)."""
        sql = events_query_sql(
            name, "event_date" in self._columns_of_events(), **self._only(*identifiers)
        )
        return self.warehouse.query(sql, params)

    # --------------------------------------------------------------- detection
    def detect(self, window: rules.DetectionWindow) -> pd.DataFrame:
        """The detection query: one row per temp user whose pair lies in ``window``."""
        return self._events_query(
            "cohorts/detect_temp_users",
            window.params(),
            "events_dataset", "events_table", "cohort_dataset", "cohort_table", "removed_table",
        )

    def detect_and_insert(self, window: rules.DetectionWindow, detected_at: dt.datetime) -> Detection:
        """Detect, then insert the temp users not yet in the table (insert-if-absent)."""
        candidates = self.detect(window)
        if candidates.empty:
            return Detection(candidates, 0)
        fresh = candidates[
            ~candidates["already_known"].fillna(False).astype(bool)
            & ~candidates["removed_before"].fillna(False).astype(bool)
        ]
        if fresh.empty:
            return Detection(candidates, 0)
        rows = fresh[["distinct_id", "device_id", "privacy_event_at", "restore_event_at"]].copy()
        rows["detected_at"] = detected_at
        rows["mixpanel_synced_at"] = pd.NaT
        result = self.warehouse.load(
            rows,
            self.dataset,
            T.TEMP_USERS_TABLE,
            T.TEMP_USERS_SCHEMA,
            mode="insert_missing",
            key_columns=["distinct_id"],
        )
        return Detection(candidates, int(result.rows_affected))

    # ------------------------------------------------------------------- stats
    def stats(self) -> CohortStats:
        df = self.warehouse.run_file("cohorts/cohort_stats", None, **self._only("cohort_dataset", "cohort_table"))
        row = df.iloc[0] if len(df) else {}
        return CohortStats(
            row_count=to_int(row.get("row_count")),
            unsynced=to_int(row.get("unsynced")),
            duplicate_rows=to_int(row.get("duplicate_rows")),
            empty_ids=to_int(row.get("empty_ids")),
        )

    # ----------------------------------------------------------------- marking
    def unsynced_ids(self) -> list[str]:
        df = self.warehouse.run_file(
            "cohorts/unsynced_temp_users", None, **self._only("cohort_dataset", "cohort_table")
        )
        return [str(v) for v in df["distinct_id"].tolist()]

    def mark_synced(self, distinct_ids: Sequence[str], synced_at: dt.datetime) -> int:
        """Set ``mixpanel_synced_at`` for ``distinct_ids`` (chunks of SYNC_FLUSH_SIZE ids)."""
        updated = 0
        for chunk in rules.chunked(list(distinct_ids), rules.SYNC_FLUSH_SIZE):
            updated += self.warehouse.execute_file(
                "cohorts/mark_synced",
                {"synced_at": synced_at, "ids": chunk},
                **self._only("cohort_dataset", "cohort_table"),
            )
        return updated

    # ---------------------------------------------------------- active users
    def active_yesterday(self, window: rules.ActivityWindow) -> pd.DataFrame:
        return self._events_query(
            "cohorts/active_yesterday",
            window.params(),
            "events_dataset", "events_table", "cohort_dataset", "cohort_table",
        )

    def remove(self, rows: pd.DataFrame, run_id: str, removed_at: dt.datetime) -> int:
        """Record ``rows`` (active_yesterday rows) as removed, then delete them from the cohort."""
        if rows.empty:
            return 0
        keep = rows[
            ["distinct_id", "device_id", "privacy_event_at", "restore_event_at", "detected_at", "last_active_at"]
        ].copy()
        keep["removed_at"] = removed_at
        keep["run_id"] = run_id
        self.warehouse.load(
            keep, self.dataset, T.REMOVED_TABLE, T.REMOVED_SCHEMA, mode="insert_missing", key_columns=["distinct_id"]
        )
        deleted = 0
        for chunk in rules.chunked([str(i) for i in rows["distinct_id"]], rules.SYNC_FLUSH_SIZE):
            deleted += self.warehouse.execute_file(
                "cohorts/delete_temp_users", {"ids": chunk}, **self._only("cohort_dataset", "cohort_table")
            )
        return deleted

    # -------------------------------------------------------------- audit log
    def audit(
        self,
        run_id: str,
        step: str,
        status: str,
        details: Optional[dict[str, Any]] = None,
        logged_at: Optional[dt.datetime] = None,
    ) -> None:
        self.warehouse.execute_file(
            "cohorts/insert_audit_log",
            rules.audit_params(run_id, step, status, details, logged_at),
            **self._only("cohort_dataset", "audit_table"),
        )

    @contextmanager
    def audited_run(
        self,
        run_id: str,
        step: str,
        started: dict[str, Any],
        *,
        failure_details: Optional[dict[str, Any]] = None,
        log: Any = None,
    ) -> Iterator[AuditedStep]:
        """The audit block around one step: a ``start_<step>`` row (``started``) now; when
        the body ends, ``end_<step>`` with the body's ``status`` / ``details``; when it (or
        that end row) raises, ``end_<step>`` ``failed`` with ``failure_details`` (default:
        ``started``) and the error, then the error is re-raised. A failure to write the
        failed row is logged, never masks the original error."""
        self.audit(run_id, f"start_{step}", "started", started)
        audited = AuditedStep(failure_details=dict(started) if failure_details is None else failure_details)
        try:
            yield audited
            self.audit(run_id, f"end_{step}", audited.status, audited.details)
        except BaseException as exc:
            end_step = f"end_{step}"
            try:
                self.audit(run_id, end_step, "failed", {**audited.failure_details, "error": error_text(exc)})
            except Exception as audit_exc:  # noqa: BLE001
                (log or _LOG).warning(f"Could not write the audit row {end_step}: {error_text(audit_exc)}")
            raise

    def summary_already_sent(self, day: dt.date) -> bool:
        df = self.warehouse.run_file(
            "cohorts/summary_sent",
            {"process_name": rules.PROCESS_NAME, "step": rules.STEP_SUMMARY, "day": day.isoformat()},
            **self._only("cohort_dataset", "audit_table"),
        )
        return bool(len(df)) and to_int(df.iloc[0]["sent"]) > 0


# ---------------------------------------------------------------------------------------
# peerplay/state_loss_temp_users: detection, active yesterday, removal, daily summary
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionRun:
    """What one detection run did (materialization and ``active_yesterday`` check metadata)."""

    as_of: dt.datetime
    window: rules.DetectionWindow
    table: str
    detection: Detection
    stats: CohortStats
    day: dt.date  # "yesterday" relative to as_of
    active: list[rules.ActiveUser]
    removed: int
    unset_failed: int
    slack_summary: str

    def counts(self) -> dict[str, int]:
        return {
            "detected": self.detection.detected,
            "inserted": self.detection.inserted,
            "already_known": self.detection.already_known,
            "previously_removed": self.detection.previously_removed,
            "active_yesterday": len(self.active),
            "removed": self.removed,
            "unset_failed": self.unset_failed,
            "unsynced": self.stats.unsynced,
        }

    def metadata(self) -> dict[str, Any]:
        return {
            "dagster/row_count": self.stats.row_count,
            **self.counts(),
            "as_of": rules.iso_utc(self.as_of),
            "window_start": rules.iso_utc(self.window.window_start),
            "lookback_days": self.window.lookback_days,
            "table": self.table,
            "dagster/table_name": self.table,
        }

    # the active_yesterday check (WARN): passes when no active temp user is left
    @property
    def active_check_passed(self) -> bool:
        return len(self.active) - self.removed == 0

    @property
    def active_check_description(self) -> str:
        day = self.day.isoformat()
        if self.active:
            return f"{len(self.active)} temp user(s) active on {day}; {self.removed} removed"
        return f"No temp user was active on {day}"

    def active_check_metadata(self) -> dict[str, Any]:
        sample = [u.distinct_id for u in self.active[: rules.SUMMARY_SAMPLE]]
        return {
            "day": self.day.isoformat(),
            "active_yesterday": len(self.active),
            "removed": self.removed,
            "distinct_ids": dg.MetadataValue.json(sample),
            "more": max(0, len(self.active) - len(sample)),
            "slack_summary": self.slack_summary,
        }


def detect_temp_users(
    store: CohortStore,
    mixpanel: Any,
    slack: Any,
    *,
    run_id: str,
    as_of: dt.datetime,
    lookback_days: int,
    remove_active: bool,
    max_ingestion_lag: dt.timedelta = dt.timedelta(minutes=rules.DEFAULT_MAX_INGESTION_LAG_MINUTES),
    events_refreshed_at: Optional[dt.datetime] = None,
    log: Any = _LOG,
) -> DetectionRun:
    """Detect and insert the temp users of ``[as_of - lookback_days, as_of)``, then the
    active-yesterday check, the opt-in removal and the once-a-day Slack summary, inside the
    ``step_1`` audit rows."""
    try:
        window = rules.detection_window(as_of, lookback_days)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from None
    store.ensure_audit_table()
    started = {
        "as_of": as_of,
        "lookback_days": lookback_days,
        "window_start": window.window_start,
        "remove_active": remove_active,
    }
    with store.audited_run(run_id, rules.STEP_DETECT, started, log=log) as audited:
        store.require_events_table()
        loaded_until = store.require_fresh_events(as_of, max_ingestion_lag, events_refreshed_at)
        log.info(f"Mixpanel events loaded up to {loaded_until.isoformat()} (as_of {as_of.isoformat()})")
        store.ensure_tables()
        detection = store.detect_and_insert(window, detected_at=utc_now())
        log.info(
            f"Temp users in [{window.window_start.isoformat()}, {as_of.isoformat()}): "
            f"{detection.detected} found, {detection.inserted} new"
        )

        # Active yesterday: the check, the optional removal and the daily summary.
        activity = rules.yesterday_window(as_of)
        active_rows = store.active_yesterday(activity)
        active = rules.active_users_from_rows(active_rows.to_dict("records"))
        removed, unset_failed = 0, 0
        if remove_active and active:
            removed, unset_failed = remove_active_users(store, mixpanel, active_rows, run_id=run_id, log=log)
        stats = store.stats()
        summary = send_daily_summary(
            store,
            slack,
            activity.day,
            active,
            cohort_size=stats.row_count + removed,
            removed=removed,
            remove_active=remove_active,
            run_id=run_id,
            log=log,
        )
        result = DetectionRun(
            as_of, window, store.table_name, detection, stats, activity.day, active, removed, unset_failed, summary
        )
        audited.details = {**started, **result.counts(), "slack_summary": summary}
    return result


def remove_active_users(
    store: CohortStore, mixpanel: Any, active_rows: pd.DataFrame, *, run_id: str, log: Any = _LOG
) -> tuple[int, int]:
    """Unset the marker of the marked ones, then move everyone whose unset did not fail.
    Returns (removed, unset failures), inside the ``remove_active`` audit rows."""
    started = {"users": len(active_rows)}
    with store.audited_run(run_id, rules.STEP_REMOVE, started, log=log) as audited:
        synced_mask = active_rows["mixpanel_synced_at"].notna()
        to_unset = [str(i) for i in active_rows.loc[synced_mask, "distinct_id"]]
        report = rules.send_in_batches(
            to_unset,
            lambda i: mixpanel.unset_update(i, rules.MARKER_PROPERTIES, ignore_time=True),
            mixpanel.engage,
        )
        failed = set(report.failed_ids)
        movable = active_rows[~active_rows["distinct_id"].astype(str).isin(failed)]
        removed = store.remove(movable, run_id, utc_now())
        if failed:
            log.warning(
                f"{len(failed)} active temp user(s) kept in the cohort: Mixpanel $unset failed "
                f"({'; '.join(report.errors[:3])}); a later run with remove_active retries them"
            )
        audited.status = "success" if not failed else "partial"
        audited.details = {
            **started,
            "removed": removed,
            "unset": len(report.succeeded_ids),
            "unset_failed": len(failed),
            "removed_ids": [str(i) for i in movable["distinct_id"]][:100],
            **{f"unset_{k}": v for k, v in report.as_details().items()},
        }
    return removed, len(failed)


def send_daily_summary(
    store: CohortStore,
    slack: Any,
    day: dt.date,
    active: list[rules.ActiveUser],
    *,
    cohort_size: int,
    removed: int,
    remove_active: bool,
    run_id: str,
    log: Any = _LOG,
) -> str:
    """Post the active-yesterday summary once per day; returns what happened."""
    if not active:
        return "nothing to report"
    if store.summary_already_sent(day):
        return "already sent today"
    text, blocks = rules.summary_message(
        day, active, cohort_size, table=store.table_name, removed=removed, remove_active=remove_active
    )
    delivery = slack.post_message(text, blocks=blocks)
    details = {"day": day.isoformat(), "active": len(active), "removed": removed, "destination": delivery.destination}
    if delivery.delivered:
        store.audit(run_id, rules.STEP_SUMMARY, "sent", details)
        return f"sent to {delivery.destination}"
    store.audit(run_id, rules.STEP_SUMMARY, "failed", {**details, "error": delivery.error})
    log.warning(f"Active-yesterday summary not delivered ({delivery.error}); the next run retries it")
    return "not delivered"


# ---------------------------------------------------------------------------------------
# mixpanel/state_loss_temp_user_cohort: the marker on the unsynced temp users' profiles
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MarkingRun:
    """What one marking run did (materialization metadata)."""

    report: rules.SyncReport
    stats: CohortStats  # after the run
    destination: str
    cohort_marker: str
    marked_at: str  # the state_loss_last_updated value sent

    def metadata(self) -> dict[str, Any]:
        return {
            "dagster/row_count": self.stats.row_count - self.stats.unsynced,  # profiles carrying the marker
            "users_marked": len(self.report.succeeded_ids),
            "users_failed": len(self.report.failed_ids),
            "batches": self.report.batches,
            "failures": self.report.failed_batches,
            "requests": self.report.requests,
            "destination": self.destination,
            "still_unsynced": self.stats.unsynced,
            "cohort_marker": self.cohort_marker,
            "state_loss_last_updated": self.marked_at,
        }


class _SyncRecorder:
    """Ids of the batches Mixpanel accepted, written back as ``mixpanel_synced_at`` every
    SYNC_FLUSH_SIZE ids (and by ``flush`` at the end); ``counts["synced"]`` is kept current
    for the audit row of a failed run."""

    def __init__(self, store: CohortStore, synced_at: dt.datetime, counts: dict[str, Any]) -> None:
        self.store, self.synced_at, self.counts = store, synced_at, counts
        self.pending: list[str] = []

    def add(self, batch_ids: list[str]) -> None:
        self.pending.extend(batch_ids)
        if len(self.pending) >= rules.SYNC_FLUSH_SIZE:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.counts["synced"] += self.store.mark_synced(self.pending, self.synced_at)
            self.pending.clear()


def mark_cohort(store: CohortStore, mixpanel: Any, *, cohort_marker: str, run_id: str, log: Any = _LOG) -> MarkingRun:
    """``$set`` the marker on every unsynced temp user through /engage in batches and record
    the accepted ones as synced, inside the ``step_2`` audit rows."""
    store.ensure_audit_table()
    with store.audited_run(
        run_id, rules.STEP_MARK, {"engage": mixpanel.engage_mode}, failure_details={"synced": 0}, log=log
    ) as audited:
        store.ensure_tables()
        ids = store.unsynced_ids()
        marked_at = utc_now().replace(microsecond=0)  # the value sent as state_loss_last_updated
        props = rules.marker_properties(cohort_marker, marked_at)
        recorder = _SyncRecorder(store, marked_at, audited.failure_details)
        try:
            report = rules.send_in_batches(
                ids, lambda i: mixpanel.set_update(i, props, ignore_time=True), mixpanel.engage,
                on_success=recorder.add
            )
        finally:
            recorder.flush()  # never lose the record of batches Mixpanel accepted
        if report.failed_batches:
            log.warning(
                f"{report.failed_batches} of {report.batches} /engage batch(es) failed; their "
                f"{len(report.failed_ids)} user(s) stay unsynced for the next run: {'; '.join(report.errors[:3])}"
            )
        if report.batches and report.failed_batches == report.batches:
            raise dg.Failure(
                f"Every /engage batch failed ({report.batches}); no temp user was marked. "
                f"First error: {report.errors[0] if report.errors else 'unknown'}"
            )
        audited.details = {"unsynced_before": len(ids), "users_marked": len(report.succeeded_ids), **report.as_details()}
    return MarkingRun(
        report, store.stats(), mixpanel.engage_mode, cohort_marker, props[rules.LAST_UPDATED_PROPERTY]
    )
