"""The Mixpanel export budget: at most 60 export queries per rolling hour and 3 per second
across ALL runs, processes and pods, with a reserve for the scheduled refresh.

Mixpanel's Raw Event Export allows 60 queries/hour and 3/second per project.  Every HTTP
request to ``/api/2.0/export`` (a retry too) first takes a slot here: the slot is recorded
in the ledger table ``mixpanel_export_budget`` of the application PostgreSQL
(created by the migration ``migrations/versions/0003_mixpanel_export_budget.py``) inside a transaction holding
``pg_advisory_xact_lock``, so two runs never both take the last slot.  The rule
(:func:`next_free`):

* any query needs fewer than ``queries_per_second`` queries in the last second;
* the scheduled refresh (the current day every 15 minutes) and the daily late sweep
  (purposes ``refresh`` / ``late_sweep``) need fewer than ``queries_per_hour`` queries in
  the last hour; a backfill (any other run) fewer than ``queries_per_hour -
  refresh_reserve``: the last ``refresh_reserve`` slots of every hour are kept for the
  schedules, so a large backfill never starves the refresh.

A caller that finds no slot waits until one frees (logging why and until when), at most
``max_wait_seconds``; when the next slot frees later than that, the run fails at once with
:class:`ExportBudgetExhausted`, naming when the budget frees.  Time comes from the
database (``clock_timestamp()``: one clock for every pod) unless a clock is injected
(tests drive hours of traffic without sleeping).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import sqlalchemy as sa
from dagster import ConfigurableResource, get_dagster_logger
from pydantic import PrivateAttr

from analytics_platform.common import UTC, read_postgres_sql
from analytics_platform.resources.app_db import AppDatabase

BUDGET_TABLE = "mixpanel_export_budget"
PURPOSE_REFRESH = "refresh"
PURPOSE_LATE_SWEEP = "late_sweep"
PURPOSE_BACKFILL = "backfill"
PURPOSES = (PURPOSE_REFRESH, PURPOSE_LATE_SWEEP, PURPOSE_BACKFILL)
# The schedules' runs may use the reserve; a backfill may not.
RESERVE_PURPOSES = frozenset({PURPOSE_REFRESH, PURPOSE_LATE_SWEEP})
HOUR = dt.timedelta(hours=1)
SECOND = dt.timedelta(seconds=1)
RETENTION = dt.timedelta(days=7)

_log = get_dagster_logger("mixpanel_export_budget")


class ExportBudgetExhausted(RuntimeError):
    """No export budget within the wait cap; the message says when it frees."""


@dataclass(frozen=True)
class BudgetLimits:
    queries_per_hour: int = 60
    queries_per_second: int = 3
    refresh_reserve: int = 8

    def problems(self) -> list[str]:
        out = []
        if self.queries_per_hour < 1:
            out.append(f"MIXPANEL_EXPORT_QUERIES_PER_HOUR must be at least 1, got {self.queries_per_hour}")
        if self.queries_per_second < 1:
            out.append(f"MIXPANEL_EXPORT_QUERIES_PER_SECOND must be at least 1, got {self.queries_per_second}")
        if not 0 <= self.refresh_reserve < self.queries_per_hour:
            out.append(
                "MIXPANEL_EXPORT_REFRESH_RESERVE must be at least 0 and below "
                f"MIXPANEL_EXPORT_QUERIES_PER_HOUR ({self.queries_per_hour}), got {self.refresh_reserve}"
            )
        return out

    def hourly_cap(self, purpose: str) -> int:
        """Queries per rolling hour (all purposes counted) under which ``purpose`` may query."""
        if purpose in RESERVE_PURPOSES:
            return self.queries_per_hour
        return self.queries_per_hour - self.refresh_reserve


def next_free(
    recent: Sequence[dt.datetime], now: dt.datetime, purpose: str, limits: BudgetLimits
) -> Optional[dt.datetime]:
    """None when a query of ``purpose`` may start at ``now``; else the earliest moment it
    may (when enough of the ``recent`` queries have left the rolling windows).

    ``recent``: the start times of the queries recorded in the last hour (any order)."""
    times = sorted(recent)
    frees: list[dt.datetime] = []
    for window, cap in ((HOUR, limits.hourly_cap(purpose)), (SECOND, limits.queries_per_second)):
        inside = [t for t in times if t > now - window]
        if len(inside) >= cap:
            # the (len - cap + 1) oldest must leave the window: the last of them leaves at
            frees.append(inside[len(inside) - cap] + window)
    return max(frees) if frees else None


@dataclass(frozen=True)
class Grant:
    queried_at: dt.datetime
    waited_seconds: float
    used_last_hour: int  # queries in the rolling hour before this one


# --------------------------------------------------------------------------- run context
@dataclass(frozen=True)
class ExportContext:
    purpose: str = PURPOSE_BACKFILL
    run_id: Optional[str] = None


_CONTEXT: contextvars.ContextVar[ExportContext] = contextvars.ContextVar(
    "mixpanel_export_context", default=ExportContext()
)


@contextlib.contextmanager
def export_context(purpose: str, run_id: Optional[str] = None) -> Iterator[ExportContext]:
    """The export queries made inside this block are charged as ``purpose`` (and ``run_id``);
    outside any block a query counts as a backfill (no reserve)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown export purpose {purpose!r}; expected one of {PURPOSES}")
    token = _CONTEXT.set(ExportContext(purpose, run_id))
    try:
        yield _CONTEXT.get()
    finally:
        _CONTEXT.reset(token)


def current_export_context() -> ExportContext:
    return _CONTEXT.get()


# --------------------------------------------------------------------------- the ledger
class ExportBudgetLedger:
    """The budget decision over the PostgreSQL ledger (see the module docstring)."""

    def __init__(
        self,
        engine: sa.Engine,
        limits: BudgetLimits = BudgetLimits(),
        *,
        max_wait_seconds: float = 600.0,
        clock: Optional[Callable[[], dt.datetime]] = None,
        sleep: Callable[[float], None] = time.sleep,
        log: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.max_wait_seconds = max_wait_seconds
        self.clock = clock
        self.sleep = sleep
        self.log = log or _log.info

    def ensure(self) -> None:
        """The ledger table exists: the application database is at the newest migration
        (``python -m analytics_platform.migrations upgrade``; the embedded local database
        migrates itself). Checked once per database per process."""
        from analytics_platform import migrations

        with self.engine.connect() as conn:
            migrations.require_current(conn)

    def _now(self, conn: sa.Connection) -> dt.datetime:
        if self.clock is not None:
            return self.clock().astimezone(UTC)
        return conn.execute(sa.text(read_postgres_sql("mixpanel/postgres/budget_now"))).scalar_one().astimezone(UTC)

    def try_acquire(
        self, purpose: str, request: str = "", run_id: Optional[str] = None
    ) -> tuple[Optional[dt.datetime], dt.datetime, int]:
        """One locked decision: (queried_at if a slot was taken and recorded, else None;
        now, or when the next slot frees; queries in the last hour)."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown export purpose {purpose!r}")
        self.ensure()
        with self.engine.begin() as conn:
            conn.execute(sa.text(read_postgres_sql("mixpanel/postgres/budget_lock")))
            now = self._now(conn)
            recent = [
                r[0].astimezone(UTC)
                for r in conn.execute(
                    sa.text(read_postgres_sql("mixpanel/postgres/budget_recent")), {"since": now - HOUR}
                )
            ]
            free_at = next_free(recent, now, purpose, self.limits)
            if free_at is not None:
                return None, free_at, len(recent)
            conn.execute(
                sa.text(read_postgres_sql("mixpanel/postgres/budget_record")),
                {"queried_at": now, "purpose": purpose, "run_id": run_id, "request": request[:500]},
            )
            conn.execute(sa.text(read_postgres_sql("mixpanel/postgres/budget_prune")), {"before": now - RETENTION})
            return now, now, len(recent)

    def acquire(self, purpose: str, request: str = "", run_id: Optional[str] = None) -> Grant:
        """Take a slot for one export query, waiting (at most ``max_wait_seconds``) when
        none is free; raise :class:`ExportBudgetExhausted` when none frees in time."""
        started: Optional[dt.datetime] = None
        waited = 0.0
        while True:
            taken, when, used = self.try_acquire(purpose, request, run_id)
            if taken is not None:
                return Grant(taken, waited, used)
            now = self._clock_now()
            started = started or now
            wait = max((when - now).total_seconds(), 0.001)
            cap = self.limits.hourly_cap(purpose)
            if (when - started).total_seconds() > self.max_wait_seconds:
                raise ExportBudgetExhausted(
                    f"Mixpanel export budget exhausted: {used} export queries in the last hour "
                    f"({'the refresh may use' if purpose in RESERVE_PURPOSES else 'a backfill may use'} "
                    f"{cap} of {self.limits.queries_per_hour}; {self.limits.refresh_reserve} are kept for "
                    f"the scheduled refresh); the next slot frees at {when:%Y-%m-%d %H:%M:%S} UTC, more "
                    f"than the {self.max_wait_seconds:.0f}s this run waits "
                    "(MIXPANEL_EXPORT_BUDGET_MAX_WAIT_SECONDS). Re-run after that time; nothing was "
                    f"exported for {request or 'this request'}."
                )
            if wait > 1.0:  # not the sub-second pacing of the 3/s limit
                self.log(
                    f"Mixpanel export budget: {used} queries in the last hour ({purpose} may use {cap} of "
                    f"{self.limits.queries_per_hour}, {self.limits.queries_per_second}/s); waiting "
                    f"{wait:.1f}s until {when:%H:%M:%S} UTC for {request or 'the next export query'}"
                )
            self.sleep(wait)
            waited += wait

    def _clock_now(self) -> dt.datetime:
        if self.clock is not None:
            return self.clock().astimezone(UTC)
        with self.engine.connect() as conn:
            return self._now(conn)

    def usage(self) -> dict[str, int]:
        """Export queries of the last hour by purpose."""
        self.ensure()
        with self.engine.connect() as conn:
            now = self._now(conn)
            rows = conn.execute(sa.text(read_postgres_sql("mixpanel/postgres/budget_usage")), {"since": now - HOUR})
            return {r.purpose: int(r.queries) for r in rows}


# --------------------------------------------------------------------------- resources
class ExportBudget(ConfigurableResource):
    """Interface: take a slot before each export query (raises ExportBudgetExhausted)."""

    def acquire(self, request: str = "") -> Grant:
        raise NotImplementedError

    def configuration_problems(self) -> list[str]:
        """What to set (variable names) for the budget to work; [] when usable.  Checked by
        the Mixpanel resource at set-up, with its own settings, in one message."""
        return []


class PostgresExportBudget(ExportBudget):
    """The export budget shared by every run, in the application PostgreSQL."""

    app_db: AppDatabase
    queries_per_hour: int = 60
    queries_per_second: int = 3
    refresh_reserve: int = 8
    max_wait_seconds: float = 600.0
    # prod: the ledger must be the shared application PostgreSQL (APP_DATABASE_URL), never
    # a process-local embedded one.
    require_database_url: bool = False

    _clock: Any = PrivateAttr(default=None)
    _sleep: Any = PrivateAttr(default=None)

    def configuration_problems(self) -> list[str]:
        problems = self.limits.problems()
        if self.max_wait_seconds < 0:
            problems.append(f"MIXPANEL_EXPORT_BUDGET_MAX_WAIT_SECONDS must not be negative, got {self.max_wait_seconds}")
        if self.require_database_url and not self.app_db.url:
            problems.append("APP_DATABASE_URL (the Mixpanel export budget's ledger lives in the application PostgreSQL)")
        return problems

    @property
    def limits(self) -> BudgetLimits:
        return BudgetLimits(self.queries_per_hour, self.queries_per_second, self.refresh_reserve)

    def use_clock(
        self, clock: Callable[[], dt.datetime], sleep: Callable[[float], None]
    ) -> "PostgresExportBudget":
        """Drive the budget with another clock (tests: simulated hours without sleeping)."""
        self._clock, self._sleep = clock, sleep
        return self

    def ledger(self, log: Optional[Callable[[str], None]] = None) -> ExportBudgetLedger:
        return ExportBudgetLedger(
            self.app_db.get_engine(),
            self.limits,
            max_wait_seconds=self.max_wait_seconds,
            clock=self._clock,
            sleep=self._sleep or time.sleep,
            log=log,
        )

    def acquire(self, request: str = "") -> Grant:
        """A slot for one export query, charged to the current :func:`export_context`."""
        ctx = current_export_context()
        return self.ledger().acquire(ctx.purpose, request, ctx.run_id)
