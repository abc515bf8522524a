"""SQL I/O of the inactivity KPI job against the application PostgreSQL, and the
orchestration of one run of ``app_db/weekly_kpi`` (no asset wiring here: ``assets.py`` is a
thin wrapper around :func:`recalculate` and :func:`send_high_churn_summary`).

A run is a few set-based statements in ONE transaction (READ COMMITTED):

1. ``inactive_users.sql``: last activity over the four sources, the inactive users, their
   score aggregates in the window and their goal target — one query.
2. vectorised S and P (``rules.evaluate_users``); a user with an invalid score fails
   alone (logged, nothing written for them).
3. ``current_kpis.sql``: the current P/S of the sample users, for the report (old -> new).
4. ``merge_weekly_kpi.sql``: one ``INSERT ... ON CONFLICT DO UPDATE SET kpis = kpis || patch``
   for every user, plus one bookkeeping row in ``weekly_kpi_recalc_runs``; one commit.

``dry_run`` runs the same reads in a READ ONLY transaction and writes nothing.

Also here: the high-churn Slack summary's bookkeeping (sent once per key), the reads of
the asset checks, and the external-write sensor's queries (its cursor is in ``rules.py``).
Statements live in ``analytics_platform/sql/kpis/*.sql`` (PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa

from analytics_platform import migrations
from analytics_platform.common import EPOCH, UTC, read_postgres_sql, render_sql
from analytics_platform.kpis.rules import (
    DEFAULT_OVERLAP,
    HIGH_CHURN_THRESHOLD,
    SAMPLE_SIZE,
    STATUS_FAILED,
    STATUS_NO_SCORES,
    Cursor,
    Decision,
    RecalcParams,
    evaluate_users,
    format_high_churn,
    high_churn,
    sample_changes,
    sample_markdown,
    sample_users,
)
from analytics_platform.resources.slack import SlackService

REQUIRED_SOURCES = ("exam_results", "features_topic_daily", "attempt", "interest_goal")
OPTIONAL_SOURCES = ("session",)
LOGGED_USER_IDS = 10  # ids named in the one log line per kind (failures, n = 0); all are in metadata

USER_COLUMNS = [
    "user_id",
    "last_activity",
    "n_scores",
    "score_mean",
    "score_stddev",
    "score_sum",
    "n_nan",
    "score_min",
    "score_max",
    "goal_target",
    "goal_nan",
]


class MissingSourceTables(RuntimeError):
    """A required source table does not exist in the application database."""


@dataclass
class RecalcResult:
    params: RecalcParams
    run_id: str
    inactive: int = 0
    processed: int = 0
    failed: int = 0
    no_scores: int = 0
    inserted: int = 0  # rows inserted (dry run: would be)
    updated: int = 0  # rows updated (dry run: would be)
    written_at: Optional[dt.datetime] = None  # the updated_at stamped on every row written
    session_table: bool = False
    created_weekly_kpi: bool = False
    duration_ms: int = 0
    users: pd.DataFrame = field(default_factory=pd.DataFrame)  # evaluated users (rules.evaluate_users)
    old_values: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # sample users' (P, S) before
    failures: list[tuple[str, str]] = field(default_factory=list)
    no_score_users: list[str] = field(default_factory=list)  # n = 0: only S written

    @property
    def week_start(self) -> dt.date:
        return self.params.week_start

    @property
    def written(self) -> bool:
        return self.written_at is not None

    @property
    def summary_line(self) -> str:
        return (
            f"Summary: processed={self.processed}, failed={self.failed}, "
            f"threshold={self.params.threshold_days} days, duration_ms={self.duration_ms}"
        )

    def high_churn(self, threshold: float = HIGH_CHURN_THRESHOLD) -> pd.DataFrame:
        """Processed users whose new S > threshold, highest first."""
        return high_churn(self.users, threshold)

    def sample(self, size: int = SAMPLE_SIZE) -> list[dict]:
        """Up to ``size`` changes (user, old -> new P/S), highest new S first."""
        return sample_changes(self.users, self.old_values, size)

    def metadata(self) -> dict[str, Any]:
        """The materialization (or, for a dry run, observation) metadata of the run."""
        p = self.params
        sample = self.sample()
        failures = [{"user_id": u, "reason": r} for u, r in self.failures]
        meta: dict[str, Any] = {
            "dagster/row_count": self.inserted + self.updated if self.written else 0,
            "dry_run": p.dry_run,
            "as_of": p.as_of.isoformat(),
            "week_start": p.week_start.isoformat(),
            "threshold_days": p.threshold_days,
            "lookback_days": p.lookback_days,
            "use_bayesian": p.use_bayesian,
            "default_target": p.default_target,
            "churn_horizon_days": p.churn_horizon_days,
            "inactive_users": self.inactive,
            "processed": self.processed,
            "failed": self.failed,
            "no_scores_s_only": self.no_scores,
            ("would_insert" if p.dry_run else "inserted"): self.inserted,
            ("would_update" if p.dry_run else "updated"): self.updated,
            "high_churn_users": len(self.high_churn()),
            "session_table_present": self.session_table,
            "duration_ms": self.duration_ms,
            "summary": self.summary_line if self.inactive else (
                f"No inactive users found (threshold={p.threshold_days} days)"
            ),
            "sample_changes": dg.MetadataValue.json(sample),
            "sample_changes_table": dg.MetadataValue.md(sample_markdown(sample)),
            "failed_users": dg.MetadataValue.json(failures),
            "users_without_scores": dg.MetadataValue.json(self.no_score_users),
        }
        if self.written_at is not None:
            meta["write_watermark"] = self.written_at.isoformat()
        if self.created_weekly_kpi:
            meta["created_weekly_kpi_table"] = True
        return meta


def existing_tables(conn: sa.Connection, names: tuple[str, ...]) -> set[str]:
    """The names among ``names`` that exist (table or view) in the application database."""
    rows = conn.execute(sa.text(read_postgres_sql("kpis/find_existing_tables")), {"names": list(names)})
    return {r[0] for r in rows}


def inactive_users_sql(with_session: bool) -> str:
    """``inactive_users.sql`` with the optional ``session_activity`` fragment (the session
    table is optional)."""
    fragment = read_postgres_sql("kpis/session_activity") if with_session else ""
    return render_sql(read_postgres_sql("kpis/inactive_users"), fragments={"session_activity": fragment})


def fetch_inactive_users(conn: sa.Connection, params: RecalcParams, with_session: bool) -> pd.DataFrame:
    rows = conn.execute(
        sa.text(inactive_users_sql(with_session)),
        {
            "as_of": params.as_of,
            "lookback_start": params.lookback_start,
            "inactive_until": params.inactive_until,
        },
    ).fetchall()
    frame = pd.DataFrame.from_records(rows, columns=USER_COLUMNS)
    for column in ("score_mean", "score_stddev", "score_sum", "score_min", "score_max", "goal_target"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["n_scores"] = frame["n_scores"].astype(np.int64)
    frame["n_nan"] = frame["n_nan"].astype(np.int64)
    frame["goal_nan"] = frame["goal_nan"].astype(np.int64)
    if frame.empty:
        frame["days_inactive"] = pd.Series(dtype=float)
        return frame
    last = pd.to_datetime(frame["last_activity"], utc=True)
    frame["days_inactive"] = (pd.Timestamp(params.as_of) - last).dt.total_seconds() / 86400.0
    return frame


def _log_users(log: logging.Logger, level: str, items: list[str], what: str, metadata_key: str) -> None:
    """One line per kind, however many users: the count and the first ids; the full list is
    in the materialization metadata (a run over 30,000 learners logs one line, not 30,000)."""
    if not items:
        return
    first = ", ".join(items[:LOGGED_USER_IDS])
    more = f" and {len(items) - LOGGED_USER_IDS} more" if len(items) > LOGGED_USER_IDS else ""
    getattr(log, level)(f"{len(items)} {what}: {first}{more} (all in metadata `{metadata_key}`)")


def recalculate(
    engine: sa.Engine,
    params: RecalcParams,
    *,
    run_id: Optional[str] = None,
    log: Optional[logging.Logger] = None,
    before_write: Optional[Callable[[], None]] = None,
) -> RecalcResult:
    """Detect inactive users and write their new P/S into ``weekly_kpi`` (one transaction).

    ``before_write`` is called after every read and before the write statement (tests use
    it to interleave a concurrent writer deterministically).
    """
    log = log or logging.getLogger(__name__)
    started = time.perf_counter()
    result = RecalcResult(params=params, run_id=run_id or f"manual-{uuid.uuid4()}")

    with engine.connect() as conn:
        with conn.begin():
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            if params.dry_run:
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            conn.exec_driver_sql("SET LOCAL timezone = 'UTC'")
            existing = existing_tables(conn, REQUIRED_SOURCES + OPTIONAL_SOURCES + ("weekly_kpi",))
            missing = [name for name in REQUIRED_SOURCES if name not in existing]
            if missing:
                raise MissingSourceTables(
                    "The application database has no table/view "
                    + ", ".join(missing)
                    + " (needed to find inactive users); check APP_DATABASE_URL points at the "
                    "application database."
                )
            result.session_table = "session" in existing
            if not result.session_table:
                log.info("Table session does not exist: last activity from the other three sources")

            users = fetch_inactive_users(conn, params, result.session_table)
            result.inactive = len(users)
            if users.empty:
                log.info(f"No inactive users found (threshold={params.threshold_days} days)")
                result.duration_ms = int((time.perf_counter() - started) * 1000)
                return result
            log.info(
                f"Found {len(users)} inactive users (threshold={params.threshold_days} days); "
                f"dry_run={params.dry_run}"
            )

            evaluated = evaluate_users(users, params.model)
            result.users = evaluated
            table_exists = "weekly_kpi" in existing
            if table_exists:
                result.old_values = _old_values(conn, sample_users(evaluated)["user_id"].tolist(), params)
            failed = evaluated[evaluated["status"] == STATUS_FAILED]
            no_scores = evaluated[evaluated["status"] == STATUS_NO_SCORES]
            result.failures = list(zip(failed["user_id"], failed["reason"]))
            result.failed = len(failed)
            result.no_scores = len(no_scores)
            result.processed = len(evaluated) - result.failed
            result.no_score_users = no_scores["user_id"].tolist()
            _log_users(
                log, "error", [f"user={u} error={reason}" for u, reason in result.failures],
                "failed users (nothing written for them)", "failed_users",
            )
            _log_users(
                log, "warning", [f"user={u}" for u in result.no_score_users],
                f"users without exam scores in the last {params.lookback_days} days: P could not "
                "be calculated, only S is written", "users_without_scores",
            )

            to_write = evaluated[evaluated["status"] != STATUS_FAILED]
            if params.dry_run or to_write.empty:
                ids = to_write["user_id"].tolist()
                existing_rows = _count_existing(conn, ids, params) if table_exists else 0
                result.inserted, result.updated = len(ids) - existing_rows, existing_rows
            else:
                if before_write is not None:
                    before_write()
                result.inserted, result.updated, result.written_at, result.created_weekly_kpi = _write(
                    conn, to_write, params, result, table_exists
                )
    result.duration_ms = int((time.perf_counter() - started) * 1000)
    log.info(result.summary_line)
    return result


def _old_values(
    conn: sa.Connection, user_ids: list[str], params: RecalcParams
) -> dict[str, tuple[Any, Any]]:
    """{user: (P_old, S_old)} for the users that have their week's row."""
    if not user_ids:
        return {}
    rows = conn.execute(
        sa.text(read_postgres_sql("kpis/current_kpis")),
        {"week_start": params.week_start, "user_ids": user_ids},
    ).fetchall()
    return {r.user_id: (r.p_old, r.s_old) for r in rows}


def _count_existing(conn: sa.Connection, user_ids: list[str], params: RecalcParams) -> int:
    if not user_ids:
        return 0
    return int(
        conn.execute(
            sa.text(read_postgres_sql("kpis/count_existing_rows")),
            {"week_start": params.week_start, "user_ids": user_ids},
        ).scalar_one()
    )


def _write(
    conn: sa.Connection,
    to_write: pd.DataFrame,
    params: RecalcParams,
    result: RecalcResult,
    table_exists: bool,
) -> tuple[int, int, dt.datetime, bool]:
    created = False
    if not table_exists:
        conn.exec_driver_sql(read_postgres_sql("kpis/create_weekly_kpi"))
        created = True
    migrations.require_current(conn)  # weekly_kpi_recalc_runs is created by the migrations
    written_at = conn.execute(sa.text(read_postgres_sql("kpis/select_write_watermark"))).scalar_one()
    p_values = [None if math.isnan(p) else float(p) for p in to_write["P"]]
    counts = conn.execute(
        sa.text(read_postgres_sql("kpis/merge_weekly_kpi")),
        {
            "week_start": params.week_start,
            "written_at": written_at,
            "user_ids": to_write["user_id"].tolist(),
            "p_values": p_values,
            "s_values": [float(s) for s in to_write["S"]],
        },
    ).one()
    inserted, updated = int(counts.inserted), int(counts.updated)
    conn.execute(
        sa.text(read_postgres_sql("kpis/record_recalc_run")),
        {
            "run_id": result.run_id,
            "written_at": written_at,
            "as_of": params.as_of,
            "week_start": params.week_start,
            "threshold_days": params.threshold_days,
            "processed": result.processed,
            "failed": result.failed,
            "inserted": inserted,
            "updated": updated,
            "alert_key": None,
        },
    )
    return inserted, updated, written_at.astimezone(UTC), created


# ------------------------------------------------------------------------------ high-churn summary
def send_high_churn_summary(
    engine: sa.Engine, result: RecalcResult, slack: SlackService, run_url: str, log: logging.Logger
) -> str:
    """At most one Slack summary per UTC day (of as_of), listing the learners whose new
    S > 0.7 and who were not listed before (``weekly_kpi_churn_alerts``); a listed learner
    who is no longer above the threshold in a run is forgotten, so a new crossing is
    reported again.

    Returns what happened: ``none`` (nobody above), ``no_new_learners``,
    ``already_sent_today``, ``not_delivered`` (the next run retries) or ``sent``.
    """
    high = result.high_churn()
    high_ids = high["user_id"].tolist() if not high.empty else []
    day = result.params.as_of.date()
    with engine.begin() as conn:
        migrations.require_current(conn)  # weekly_kpi_churn_alerts is created by the migrations
        conn.execute(sa.text(read_postgres_sql("kpis/forget_recovered_churn_alerts")), {"high_ids": high_ids})
        state = conn.execute(
            sa.text(read_postgres_sql("kpis/select_churn_alert_state")), {"day": day, "user_ids": high_ids}
        ).one()
    if high.empty:
        return "none"
    new = high[~high["user_id"].isin(set(state.already_listed or []))]
    if new.empty:
        log.info(f"High-churn summary: all {len(high)} learners above {HIGH_CHURN_THRESHOLD} were listed before")
        return "no_new_learners"
    if state.sent_today:
        log.info(f"High-churn summary already sent on {day} (UTC); {len(new)} new learner(s) wait for the next day's")
        return "already_sent_today"
    text, blocks = format_high_churn(
        new,
        week_start=result.week_start.isoformat(),
        as_of=result.params.as_of.isoformat(),
        threshold=HIGH_CHURN_THRESHOLD,
        run_url=run_url,
    )
    delivery = slack.post_message(text, blocks=blocks)
    if not delivery.delivered:
        log.warning(f"High-churn summary not delivered ({delivery.error}); the next run retries it")
        return "not_delivered"
    with engine.begin() as conn:
        conn.execute(
            sa.text(read_postgres_sql("kpis/record_churn_alerts")),
            {"user_ids": new["user_id"].tolist(), "s": [float(v) for v in new["S"]], "day": day,
             "run_id": result.run_id},
        )
    log.info(f"High-churn summary ({len(new)} new learners) sent to {delivery.destination}")
    return "sent"


# ------------------------------------------------------------------------------ asset checks
def latest_recalc_run(conn: sa.Connection) -> Optional[sa.RowMapping]:
    """The most recent (non-dry) run's bookkeeping row, None when there is none yet."""
    if not existing_tables(conn, ("weekly_kpi_recalc_runs",)):
        return None
    return conn.execute(sa.text(read_postgres_sql("kpis/latest_recalc_run"))).mappings().first()


def ps_range_of_week(conn: sa.Connection, week: dt.date) -> sa.Row:
    """``rows_in_week, bad_p, bad_s, bad_examples`` of the week's P and S values."""
    return conn.execute(sa.text(read_postgres_sql("kpis/check_ps_range")), {"week_start": week}).one()


# ------------------------------------------------------------------------------ external writes
def foreign_writes(conn: sa.Connection, low: dt.datetime, own_runs_table: bool) -> tuple[int, Optional[dt.datetime]]:
    """(rows, newest updated_at) of foreign writes with updated_at > low."""
    fragment = read_postgres_sql("kpis/own_writes_filter") if own_runs_table else ""
    statement = render_sql(read_postgres_sql("kpis/foreign_writes"), fragments={"own_writes_filter": fragment})
    row = conn.execute(sa.text(statement), {"low": low}).one()
    hi = row.max_updated_at.astimezone(UTC) if row.max_updated_at is not None else None
    return int(row.n_rows), hi


def _cursor_at(conn: sa.Connection, hi: Optional[dt.datetime], overlap: dt.timedelta, own: bool) -> Cursor:
    low = (hi - overlap) if hi is not None else EPOCH
    count, _ = foreign_writes(conn, low, own)
    return Cursor(hi=hi, low=low, count=count)


def evaluate_external_writes(
    engine: sa.Engine, cursor_text: Optional[str], overlap: dt.timedelta = DEFAULT_OVERLAP
) -> Decision:
    """One sensor tick: did something else write ``weekly_kpi`` since the cursor?

    (How own writes are told apart: see ``rules.py``, "external writes".)  The first tick
    only records where things stand (no run on deployment); the daily schedule covers what
    happened before.
    """
    with engine.connect() as conn:
        tables = existing_tables(conn, ("weekly_kpi", "weekly_kpi_recalc_runs"))
        if "weekly_kpi" not in tables:
            return Decision(False, None, "weekly_kpi does not exist yet")
        own = "weekly_kpi_recalc_runs" in tables
        cursor = Cursor.from_json(cursor_text)
        if cursor is None:
            _, hi = foreign_writes(conn, EPOCH, own)
            return Decision(False, _cursor_at(conn, hi, overlap, own), "cursor initialised")
        count, hi = foreign_writes(conn, cursor.low, own)
        newer = hi is not None and (cursor.hi is None or hi > cursor.hi)
        late = count > cursor.count
        if not (newer or late):
            if count != cursor.count:  # own runs replaced foreign rows: follow, don't fire
                return Decision(False, Cursor(cursor.hi, cursor.low, count), "no foreign writes")
            return Decision(False, None, "no foreign writes")
        new_hi = max(h for h in (hi, cursor.hi) if h is not None)
        new_cursor = _cursor_at(conn, new_hi, overlap, own)
        new_rows = max(count - cursor.count, 0)
        what = f"{new_rows} row(s) written by another writer" if new_rows else "rows rewritten by another writer"
        return Decision(True, new_cursor, f"{what}, newest updated_at {new_hi.isoformat()}", new_rows)
