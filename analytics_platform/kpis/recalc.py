"""Inactivity detection and P/S recalculation against the application PostgreSQL.

No Dagster here: :func:`recalculate` takes a SQLAlchemy engine and plain parameters and
returns a :class:`RecalcResult`; the asset in ``assets.py`` is a thin wrapper.

A run is a few set-based statements in ONE transaction (READ COMMITTED):

1. ``inactive_users.sql``: last activity over the four sources, the inactive users, their
   score aggregates in the window and their goal target — one query.
2. vectorised S and P (``models.evaluate_users``); a user with an invalid score fails
   alone (logged, nothing written for them).
3. ``current_kpis.sql``: the current P/S of the sample users, for the report (old -> new).
4. ``merge_weekly_kpi.sql``: one ``INSERT ... ON CONFLICT DO UPDATE SET kpis = kpis || patch``
   for every user, plus one bookkeeping row in ``weekly_kpi_recalc_runs``; one commit.

``dry_run`` runs the same reads in a READ ONLY transaction and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import numpy as np
import pandas as pd
import sqlalchemy as sa

from analytics_platform.kpis.models import (
    STATUS_FAILED,
    STATUS_NO_SCORES,
    ModelParams,
    evaluate_users,
)
from analytics_platform.common import read_postgres_sql

UTC = dt.timezone.utc
REQUIRED_SOURCES = ("exam_results", "features_topic_daily", "attempt", "interest_goal")
OPTIONAL_SOURCES = ("session",)
HIGH_CHURN_THRESHOLD = 0.7
MAX_USER_LOG_LINES = 100  # per kind (failures, n = 0 warnings); the rest is counted
SAMPLE_SIZE = 20

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


class Logger(Protocol):
    def info(self, msg: str, *args: Any) -> Any: ...
    def warning(self, msg: str, *args: Any) -> Any: ...
    def error(self, msg: str, *args: Any) -> Any: ...


class RecalcConfigError(ValueError):
    """Invalid run parameters (the message says which and what is allowed)."""


class MissingSourceTables(RuntimeError):
    """A required source table does not exist in the application database."""


def read_sql(name: str) -> str:
    """The statement of ``analytics_platform/sql/kpis/<name>.sql`` without its comments."""
    return read_postgres_sql(f"kpis/{name}")


@dataclass(frozen=True)
class RecalcParams:
    as_of: dt.datetime
    threshold_days: int
    lookback_days: int
    use_bayesian: bool
    default_target: float
    churn_horizon_days: float
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.as_of.tzinfo is None:
            raise RecalcConfigError("as_of must be timezone-aware (UTC)")
        object.__setattr__(self, "as_of", self.as_of.astimezone(UTC))
        if self.threshold_days < 0:
            raise RecalcConfigError(f"threshold_days must be >= 0, got {self.threshold_days}")
        if self.lookback_days < self.threshold_days:
            raise RecalcConfigError(
                f"lookback_days ({self.lookback_days}) must be >= threshold_days "
                f"({self.threshold_days}), otherwise no user can be inactive"
            )
        if not (math.isfinite(self.churn_horizon_days) and self.churn_horizon_days > 0):
            raise RecalcConfigError(
                f"churn_horizon_days must be a positive number, got {self.churn_horizon_days}"
            )
        if not math.isfinite(self.default_target):
            raise RecalcConfigError(f"default_target must be a finite number, got {self.default_target}")

    @property
    def week_start(self) -> dt.date:
        """Monday of as_of's UTC date."""
        day = self.as_of.date()
        return day - dt.timedelta(days=day.weekday())

    @property
    def lookback_start(self) -> dt.datetime:
        return self.as_of - dt.timedelta(days=self.lookback_days)

    @property
    def inactive_until(self) -> dt.datetime:
        return self.as_of - dt.timedelta(days=self.threshold_days)

    @property
    def model(self) -> ModelParams:
        return ModelParams(
            use_bayesian=self.use_bayesian,
            default_target=float(self.default_target),
            churn_horizon_days=float(self.churn_horizon_days),
        )


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
    users: pd.DataFrame = field(default_factory=pd.DataFrame)  # evaluated users (models.evaluate_users)
    old_values: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # sample users' (P, S) before
    failures: list[tuple[str, str]] = field(default_factory=list)

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
        if self.users.empty:
            return self.users
        ok = self.users[self.users["status"] != STATUS_FAILED]
        high = ok[ok["S"] > threshold]
        return high.sort_values(["S", "user_id"], ascending=[False, True]).reset_index(drop=True)

    def sample(self, size: int = SAMPLE_SIZE) -> list[dict]:
        """Up to ``size`` changes (user, old -> new P/S), highest new S first."""
        if self.users.empty:
            return []
        out = []
        for r in _sample_users(self.users, size).itertuples(index=False):
            p_old, s_old = self.old_values.get(r.user_id, (None, None))
            out.append(
                {
                    "user_id": r.user_id,
                    "days_inactive": round(float(r.days_inactive), 3),
                    "n_scores": int(r.n_scores),
                    "P_old": _json_number(p_old),
                    "P_new": None if pd.isna(r.P) else float(r.P),
                    "S_old": _json_number(s_old),
                    "S_new": float(r.S),
                }
            )
        return out


def _json_number(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def high_churn_alert_key(result: RecalcResult, threshold: float = HIGH_CHURN_THRESHOLD) -> Optional[str]:
    """Identifies one high-churn summary: the week, as_of and the exact users and values.

    A re-run with the same as_of and the same data has the same key, so the summary is
    sent once (principle 5).  None when there is nobody to report.
    """
    high = result.high_churn(threshold)
    if high.empty:
        return None
    digest = hashlib.sha256()
    digest.update(f"{result.week_start}|{result.params.as_of.isoformat()}|".encode())
    for user_id, s in zip(high["user_id"], high["S"]):
        digest.update(f"{user_id}={s:.12g};".encode())
    return digest.hexdigest()[:32]


def _existing(conn: sa.Connection, names: tuple[str, ...]) -> set[str]:
    rows = conn.execute(
        sa.text(
            "SELECT name FROM unnest(CAST(:names AS text[])) AS t(name) "
            "WHERE to_regclass(name) IS NOT NULL"
        ),
        {"names": list(names)},
    )
    return {r[0] for r in rows}


def inactive_users_sql(with_session: bool) -> str:
    fragment = read_sql("session_activity") if with_session else ""
    return read_sql("inactive_users").replace("{session_activity}", fragment)


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


def _log_users(log: Logger, level: str, lines: list[str], what: str) -> None:
    emit = getattr(log, level)
    for line in lines[:MAX_USER_LOG_LINES]:
        emit(line)
    if len(lines) > MAX_USER_LOG_LINES:
        emit(f"... and {len(lines) - MAX_USER_LOG_LINES} more {what} (see materialization metadata)")


def recalculate(
    engine: sa.Engine,
    params: RecalcParams,
    *,
    run_id: Optional[str] = None,
    log: Optional[Logger] = None,
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
            existing = _existing(conn, REQUIRED_SOURCES + OPTIONAL_SOURCES + ("weekly_kpi",))
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
                result.old_values = _old_values(conn, _sample_users(evaluated)["user_id"].tolist(), params)
            failed = evaluated[evaluated["status"] == STATUS_FAILED]
            no_scores = evaluated[evaluated["status"] == STATUS_NO_SCORES]
            result.failures = list(zip(failed["user_id"], failed["reason"]))
            result.failed = len(failed)
            result.no_scores = len(no_scores)
            result.processed = len(evaluated) - result.failed
            _log_users(
                log, "error", [f"user={u} error={reason}" for u, reason in result.failures], "failed users"
            )
            _log_users(
                log,
                "warning",
                [
                    f"Could not calculate P for user={u}: no exam scores in the last "
                    f"{params.lookback_days} days; only S is written"
                    for u in no_scores["user_id"]
                ],
                "users without scores",
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


def _sample_users(evaluated: pd.DataFrame, size: int = SAMPLE_SIZE) -> pd.DataFrame:
    """The users shown in the report: written ones, highest new S first."""
    ok = evaluated[evaluated["status"] != STATUS_FAILED]
    return ok.sort_values(["S", "user_id"], ascending=[False, True]).head(size)


def _old_values(
    conn: sa.Connection, user_ids: list[str], params: RecalcParams
) -> dict[str, tuple[Any, Any]]:
    """{user: (P_old, S_old)} for the users that have their week's row."""
    if not user_ids:
        return {}
    rows = conn.execute(
        sa.text(read_sql("current_kpis")), {"week_start": params.week_start, "user_ids": user_ids}
    ).fetchall()
    return {r.user_id: (r.p_old, r.s_old) for r in rows}


def _count_existing(conn: sa.Connection, user_ids: list[str], params: RecalcParams) -> int:
    if not user_ids:
        return 0
    return int(
        conn.execute(
            sa.text(read_sql("count_existing_rows")),
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
        conn.exec_driver_sql(read_sql("create_weekly_kpi"))
        created = True
    conn.exec_driver_sql(read_sql("create_recalc_runs"))
    written_at = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    p_values = [None if math.isnan(p) else float(p) for p in to_write["P"]]
    counts = conn.execute(
        sa.text(read_sql("merge_weekly_kpi")),
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
        sa.text(read_sql("record_recalc_run")),
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


def mark_alert(
    engine: sa.Engine, run_id: str, alert_key: str, sent: bool
) -> None:
    """Record the run's high-churn alert key (and that it was delivered)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE weekly_kpi_recalc_runs SET alert_key = :alert_key, "
                "alert_sent_at = CASE WHEN :sent THEN clock_timestamp() ELSE alert_sent_at END "
                "WHERE run_id = :run_id"
            ),
            {"alert_key": alert_key, "sent": sent, "run_id": run_id},
        )


def alert_already_sent(engine: sa.Engine, alert_key: str) -> bool:
    """True when some run already delivered the summary with this key."""
    with engine.connect() as conn:
        if not _existing(conn, ("weekly_kpi_recalc_runs",)):
            return False
        return bool(
            conn.execute(
                sa.text(
                    "SELECT EXISTS (SELECT 1 FROM weekly_kpi_recalc_runs "
                    "WHERE alert_key = :k AND alert_sent_at IS NOT NULL)"
                ),
                {"k": alert_key},
            ).scalar()
        )
