"""Item 4: the shared Mixpanel export budget (60 queries per rolling hour, 3 per second,
across every run; a reserve for the scheduled refresh) and 30-day export slices.

Real PostgreSQL (``app_db``), the Mixpanel stub over HTTP, DuckDB.  Time is a simulated
clock (:class:`VirtualClock`) so hours of refresh + backfill traffic run in seconds.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import threading
from typing import Callable

import dagster as dg
import pytest
import sqlalchemy as sa

from analytics_platform.common import UTC
from analytics_platform.mixpanel import rules as R
from analytics_platform.mixpanel import store
from analytics_platform.resources.export_budget import (
    BudgetLimits,
    ExportBudgetExhausted,
    PostgresExportBudget,
    export_context,
    next_free,
)
from analytics_platform.resources.mixpanel import MixpanelBudgetError, MixpanelResource
from analytics_platform.resources.warehouse import DuckDBWarehouse
from analytics_platform_tests.mixpanel.conftest import DATASET, TABLE, materialize_events, metadata_of, mp_event, ts
from analytics_platform_tests.stubs.base import StubServer

HOUR = dt.timedelta(hours=1)
SECOND = dt.timedelta(seconds=1)


# --------------------------------------------------------------------------- simulated time
class VirtualClock:
    """Simulated time shared by cooperating threads ("participants").

    Time stands still while any participant runs (HTTP, SQL, parsing) and jumps to the
    earliest wake-up once every participant sleeps, so waiting an hour costs nothing."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = start
        self._cond = threading.Condition()
        self._running = 0
        self._sleepers: list[tuple[dt.datetime, int]] = []
        self._released: set[int] = set()
        self._seq = itertools.count()

    def now(self) -> dt.datetime:
        with self._cond:
            return self._now

    def join(self) -> None:
        with self._cond:
            self._running += 1

    def leave(self) -> None:
        with self._cond:
            self._running -= 1
            self._advance()

    def sleep(self, seconds: float) -> None:
        with self._cond:
            seq = next(self._seq)
            heapq.heappush(self._sleepers, (self._now + dt.timedelta(seconds=max(seconds, 0.0)), seq))
            self._running -= 1
            self._advance()
            while seq not in self._released:
                self._cond.wait()
            self._released.discard(seq)

    def sleep_until(self, when: dt.datetime) -> None:
        self.sleep((when - self.now()).total_seconds())

    def _advance(self) -> None:
        if self._running > 0 or not self._sleepers:
            return
        self._now = max(self._now, self._sleepers[0][0])
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, seq = heapq.heappop(self._sleepers)
            self._released.add(seq)
            self._running += 1
        self._cond.notify_all()


def run_participants(clock: VirtualClock, actors: list[Callable[[], None]], timeout: float = 600) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrap(actor: Callable[[], None]) -> None:
        try:
            actor()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            clock.leave()

    threads = []
    for actor in actors:
        clock.join()
        threads.append(threading.Thread(target=wrap, args=(actor,), daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a simulated actor did not finish"
    return errors


def stamp_stub_requests(stub, clock: VirtualClock, monkeypatch) -> None:
    """Each stub request also records the simulated time it arrived at."""
    monkeypatch.setattr(stub, "record", lambda **entry: StubServer.record(stub, at=clock.now(), **entry))


def max_in_window(times: list[dt.datetime], window: dt.timedelta) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def budget_rows(app_db) -> list[tuple]:
    with app_db.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT queried_at, purpose, run_id, request FROM mixpanel_export_budget ORDER BY queried_at, run_id, request"))]


def budgeted(stub, app_db, clock: VirtualClock | None = None, **limits) -> MixpanelResource:
    budget = PostgresExportBudget(app_db=app_db, **limits)
    if clock is not None:
        budget.use_clock(clock.now, clock.sleep)
    return MixpanelResource(**stub.resource_kwargs(), budget=budget)


# --------------------------------------------------------------------------- the rule
T0 = dt.datetime(2024, 6, 10, 12, 0, tzinfo=UTC)


def test_rule_reserve_per_hour_and_per_second():
    limits = BudgetLimits(queries_per_hour=60, queries_per_second=3, refresh_reserve=8)
    hour_ago = [T0 - dt.timedelta(minutes=59, seconds=i) for i in range(52)]  # 52 in the last hour
    # a backfill must wait until the oldest of them leaves the rolling hour
    assert next_free(hour_ago, T0, "backfill", limits) == min(hour_ago) + HOUR
    # the refresh (and the late sweep) may use the reserve
    assert next_free(hour_ago, T0, "refresh", limits) is None
    assert next_free(hour_ago, T0, "late_sweep", limits) is None
    full = hour_ago + [T0 - dt.timedelta(minutes=30, seconds=i) for i in range(8)]
    assert next_free(full, T0, "refresh", limits) == min(full) + HOUR
    # 3 per second, for everyone
    burst = [T0 - dt.timedelta(milliseconds=100 * i) for i in range(3)]
    assert next_free(burst, T0, "refresh", limits) == min(burst) + SECOND
    assert next_free(burst[:2], T0, "refresh", limits) is None
    # a query exactly an hour old has left the window
    assert next_free([T0 - HOUR] * 60, T0, "backfill", limits) is None


def test_purpose_of_a_run():
    today = dt.date(2024, 6, 10)
    assert R.export_purpose("refresh", [today], today) == "refresh"
    assert R.export_purpose("refresh", [today - dt.timedelta(days=1), today], today) == "refresh"
    # a run tagged as the refresh that does not cover today is charged as a backfill
    assert R.export_purpose("refresh", [dt.date(2024, 1, 1)], today) == "backfill"
    assert R.export_purpose("late_sweep", [today - dt.timedelta(days=2)], today) == "late_sweep"
    assert R.export_purpose(None, [today], today) == "backfill"


def test_invalid_limits_fail_at_setup_naming_the_variable(app_db, mixpanel_stub):
    resource = MixpanelResource(
        **mixpanel_stub.resource_kwargs(), budget=PostgresExportBudget(app_db=app_db, refresh_reserve=60)
    )
    with pytest.raises(Exception) as raised:
        with dg.build_resources({"mixpanel": resource}):
            pass
    assert "MIXPANEL_EXPORT_REFRESH_RESERVE" in str(raised.value) + str(raised.value.__cause__)


# --------------------------------------------------------------------------- the ledger
def test_concurrent_callers_never_take_more_than_the_budget(app_db):
    """Twelve threads on their own connections race for slots: the advisory lock lets
    exactly the backfill's share through (60 - 8 reserve), recorded once each."""
    limits = dict(queries_per_hour=60, queries_per_second=10_000, refresh_reserve=8, max_wait_seconds=0)
    granted, refused = [], []
    lock = threading.Lock()

    def worker(n: int) -> None:
        ledger = PostgresExportBudget(app_db=app_db, **limits).ledger()
        for i in range(10):
            try:
                ledger.acquire("backfill", f"worker {n} query {i}", f"run-{n}")
                outcome = granted
            except ExportBudgetExhausted:
                outcome = refused
            with lock:
                outcome.append(n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(granted) == 52 and len(refused) == 120 - 52
    assert len(budget_rows(app_db)) == 52
    assert PostgresExportBudget(app_db=app_db).ledger().usage() == {"backfill": 52}


_PROCESS = """
import sys
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.resources.export_budget import ExportBudgetExhausted, PostgresExportBudget
ledger = PostgresExportBudget(app_db=AppDatabase(url=sys.argv[1]), queries_per_second=10_000,
                              max_wait_seconds=0).ledger()
granted = 0
for i in range(20):
    try:
        ledger.acquire("backfill", f"query {i}", sys.argv[2])
        granted += 1
    except ExportBudgetExhausted:
        pass
print("GRANTED", granted)
"""


def test_separate_processes_share_one_budget(app_db_url, app_db):
    """Four processes (as four pods would) race for slots on the same database: 52 in all."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())}
    procs = [
        subprocess.Popen([sys.executable, "-c", _PROCESS, app_db_url, f"pod-{n}"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    granted = [int(out.split("GRANTED")[1]) for out, err in outputs if "GRANTED" in out]
    assert len(granted) == 4, [err[-2000:] for _, err in outputs]
    assert sum(granted) == 52
    rows = budget_rows(app_db)
    assert len(rows) == 52 and {r[2] for r in rows} <= {f"pod-{n}" for n in range(4)}


def test_a_backfill_without_budget_fails_naming_when_it_frees(app_db, mixpanel_stub, tmp_path):
    clock = VirtualClock(T0)
    oldest = T0 - dt.timedelta(minutes=50)
    ledger = PostgresExportBudget(app_db=app_db, queries_per_second=100).use_clock(lambda: oldest, clock.sleep).ledger()
    for _ in range(52):
        ledger.acquire("backfill", "earlier backfill")
    mp = budgeted(mixpanel_stub, app_db, clock, max_wait_seconds=300)
    with pytest.raises(MixpanelBudgetError) as raised:
        with export_context("backfill", "run-b"):
            mp.export_to_file("2024-06-01", "2024-06-01", ["app_open"], dest=tmp_path / "x.jsonl")
    message = str(raised.value)
    assert "52 export queries in the last hour" in message
    assert "frees at 2024-06-10 12:10:00 UTC" in message and "MIXPANEL_EXPORT_BUDGET_MAX_WAIT_SECONDS" in message
    assert mixpanel_stub.export_requests == []  # nothing was sent
    # the refresh still gets its query at once (the reserve)
    with export_context("refresh", "run-r"):
        stats = mp.export_to_file("2024-06-01", "2024-06-01", ["app_open"], dest=tmp_path / "y.jsonl")
    assert stats.budget_waited_seconds == 0 and len(mixpanel_stub.export_requests) == 1
    # within the cap a backfill waits (simulated) for the slot instead of failing
    patient = budgeted(mixpanel_stub, app_db, clock, max_wait_seconds=900, queries_per_second=100)
    clock.join()
    try:
        with export_context("backfill", "run-c"):
            stats = patient.export_to_file("2024-06-01", "2024-06-01", ["app_open"], dest=tmp_path / "z.jsonl")
    finally:
        clock.leave()
    assert stats.budget_waited_seconds == pytest.approx(600, abs=1)
    assert clock.now() == oldest + HOUR


def test_run_fails_clearly_when_the_budget_is_spent(app_db, mixpanel_stub, duckdb_warehouse):
    """Through the asset: a backfill run finding no budget fails with the message (no
    traceback) and exports nothing; the ledger holds the refresh's reserve."""
    now = dt.datetime.now(UTC)
    ledger = PostgresExportBudget(app_db=app_db, queries_per_second=100).use_clock(lambda: now, lambda s: None).ledger()
    for _ in range(52):
        ledger.acquire("backfill", "earlier")
    mp = MixpanelResource(
        **mixpanel_stub.resource_kwargs(), budget=PostgresExportBudget(app_db=app_db, max_wait_seconds=5)
    )
    result = materialize_events(duckdb_warehouse, mp, "2024-06-05", raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "Mixpanel export budget exhausted" in failure.step_failure_data.error.message
    assert mixpanel_stub.export_requests == []


def test_refresh_run_is_charged_as_refresh_with_its_run_id(app_db, mixpanel_stub, duckdb_warehouse):
    today = dt.datetime.now(UTC).date()
    mixpanel_stub.add_events(today, [mp_event("app_open", dt.datetime(today.year, today.month, today.day, tzinfo=UTC), "u1", "t-1")])
    mp = budgeted(mixpanel_stub, app_db)
    result = dg.materialize(
        [store_asset()],
        partition_key=today.isoformat(),
        tags={"analytics_platform/trigger": "refresh"},
        resources={"warehouse": duckdb_warehouse, "mixpanel": mp},
    )
    (row,) = budget_rows(app_db)
    assert row[1] == "refresh" and row[2] == result.run_id
    assert metadata_of(result, store_asset().key)["export_budget_purpose"] == "refresh"


def store_asset():
    from analytics_platform.mixpanel.assets import mixpanel_events

    return mixpanel_events


# --------------------------------------------------------------------------- slices
def test_slices_are_at_most_30_days():
    first, last = dt.date(2024, 1, 1), dt.date(2024, 3, 15)  # 75 days
    slices = R.export_slices([(first, last)])
    assert [(b - a).days + 1 for a, b in slices] == [30, 30, 15]
    assert slices[0][0] == first and slices[-1][1] == last
    assert all(slices[i][1] + dt.timedelta(days=1) == slices[i + 1][0] for i in range(2))
    assert R.utc_days_per_export("UTC") == 30 and R.utc_days_per_export("America/Los_Angeles") == 29


@pytest.mark.parametrize("zone", ["UTC", "America/Los_Angeles"])
def test_a_75_day_range_is_three_export_queries_of_at_most_30_days(app_db, mixpanel_stub, duckdb_warehouse, zone, monkeypatch):
    monkeypatch.setenv("MIXPANEL_PROJECT_TIMEZONE", zone)
    mixpanel_stub.project_timezone = zone
    for day in ("2024-03-01", "2024-04-15", "2024-05-14"):
        mixpanel_stub.add_events(day, [mp_event("app_open", ts(f"{day}T12:00:00"), "u1", f"{day}-1")])
    result = materialize_events(
        duckdb_warehouse, budgeted(mixpanel_stub, app_db), partition_range=("2024-03-01", "2024-05-14")
    )
    asked = [(dt.date.fromisoformat(r["params"]["from_date"]), dt.date.fromisoformat(r["params"]["to_date"]))
             for r in mixpanel_stub.export_requests]
    assert len(asked) == 3
    assert all((b - a).days + 1 <= 30 for a, b in asked), asked
    assert len(budget_rows(app_db)) == 3
    meta = metadata_of(result, store_asset().key)
    assert meta["export_requests"] == 3 and meta["run_rows"] == 3


# --------------------------------------------------------------------------- refresh + backfill
def test_refresh_and_backfill_together_stay_within_the_budget(app_db, mixpanel_stub, tmp_path, monkeypatch):
    """Three simulated hours: the 15-minute refresh of the current day, plus a backfill
    launched as one run per day (`dagster job backfill`) by two workers at once.  Counted
    at the stub: never more than 60 export queries in any rolling hour nor 3 in any
    second, backfills never beyond 52 an hour, and every refresh tick queries within a
    second of its tick (never starved)."""
    start = dt.datetime(2024, 6, 10, 0, 0, tzinfo=UTC)
    clock = VirtualClock(start)
    stamp_stub_requests(mixpanel_stub, clock, monkeypatch)
    today = start.date()
    mixpanel_stub.add_events(today, [mp_event("app_open", start + dt.timedelta(minutes=m), f"u{m}", f"r-{m}") for m in range(0, 180, 7)])
    backfill_days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(80)]
    for day in backfill_days[::10]:
        mixpanel_stub.add_events(day, [mp_event("app_open", dt.datetime(day.year, day.month, day.day, 9, tzinfo=UTC), "b", f"b-{day}")])
    refresh_ticks = [start + dt.timedelta(minutes=15 * k) for k in range(12)]
    refresh_runs: list[tuple[dt.datetime, str]] = []

    def ingest(warehouse, mp, day, purpose, run_id):
        return store.ingest_ranges(
            warehouse=warehouse, mixpanel=mp, dataset=DATASET, table=TABLE, ranges=[(day, day)],
            events=["app_open"], now=clock.now(), purpose=purpose, run_id=run_id,
            sleep=clock.sleep, clock=clock.now, workdir=tmp_path / run_id,
        )

    def refresh() -> None:
        warehouse = DuckDBWarehouse(path=str(tmp_path / "refresh.duckdb"))
        for k, tick in enumerate(refresh_ticks):
            clock.sleep_until(tick)
            mp = budgeted(mixpanel_stub, app_db, clock, max_wait_seconds=600)
            run_id = f"refresh-{k}"
            ingest(warehouse, mp, today, "refresh", run_id)
            refresh_runs.append((tick, run_id))

    def backfill_worker(days: list[dt.date], n: int) -> Callable[[], None]:
        def work() -> None:
            warehouse = DuckDBWarehouse(path=str(tmp_path / f"backfill{n}.duckdb"))
            for day in days:
                mp = budgeted(mixpanel_stub, app_db, clock, max_wait_seconds=4 * 3600)
                ingest(warehouse, mp, day, "backfill", f"backfill-{day}")
        return work

    errors = run_participants(clock, [refresh, backfill_worker(backfill_days[0::2], 0), backfill_worker(backfill_days[1::2], 1)])
    assert errors == []

    requests = mixpanel_stub.export_requests
    assert all(r["status"] == 200 for r in requests)
    times = [r["at"] for r in requests]
    refresh_times = [r["at"] for r in requests if r["params"]["from_date"] == today.isoformat()]
    backfill_times = [r["at"] for r in requests if r["params"]["from_date"] != today.isoformat()]
    assert len(refresh_times) == len(refresh_ticks) and len(backfill_times) == len(backfill_days)
    assert max_in_window(times, HOUR) <= 60
    assert max_in_window(times, SECOND) <= 3
    assert max_in_window(backfill_times, HOUR) <= 52
    # the backfill really pressed on the budget: it took its share (52 of the hour's 60,
    # less the refresh queries already in the hour) and left the reserve to the refresh
    assert max_in_window(backfill_times, HOUR) >= 52 - 4
    assert clock.now() > start + 2 * HOUR
    # never starved: each refresh tick's query left within a second of the tick
    for tick, at in zip(refresh_ticks, sorted(refresh_times)):
        assert tick <= at <= tick + SECOND, (tick, at)
    # the ledger saw exactly what the stub received
    rows = budget_rows(app_db)
    assert len(rows) == len(requests)
    assert sorted(r[0] for r in rows) == sorted(times)


# --------------------------------------------------------------------------- wiring
def test_prod_without_the_app_database_fails_at_setup_naming_it(mixpanel_stub):
    from analytics_platform.resources import build_resources
    from analytics_platform.settings import get_settings

    env = {"ANALYTICS_ENV": "prod", "GCP_PROJECT_ID": "p1", **mixpanel_stub.env(), "MIXPANEL_EXPORT_REFRESH_RESERVE": "10"}
    mixpanel = build_resources(get_settings(env), secrets_as_env_vars=False)["mixpanel"]
    assert mixpanel.budget.refresh_reserve == 10 and mixpanel.budget.queries_per_hour == 60
    with pytest.raises(Exception) as raised:
        with dg.build_resources({"mixpanel": mixpanel}):
            pass
    text = str(raised.value) + str(raised.value.__cause__)
    assert "APP_DATABASE_URL" in text and "export budget" in text


def test_scheduled_runs_are_charged_as_refresh_and_sweep_and_queued_first():
    from analytics_platform.mixpanel import schedules as S

    tick = dt.datetime(2024, 6, 10, 12, 15, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        refresh = S.refresh_request(dg.build_schedule_context(instance=instance, scheduled_execution_time=tick))
        sweep = S.late_sweep_request(dg.build_schedule_context(instance=instance, scheduled_execution_time=tick))
    assert refresh.tags[R.TRIGGER_TAG] == "refresh" and sweep.tags[R.TRIGGER_TAG] == "late_sweep"
    assert int(refresh.tags["dagster/priority"]) > int(sweep.tags["dagster/priority"]) > 0
    assert R.export_purpose(refresh.tags[R.TRIGGER_TAG], [tick.date()], tick.date()) == "refresh"
