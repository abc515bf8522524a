"""Item 8: the per-day export ledger ``{dataset}.mixpanel_export_log`` written by every
ingestion run, and the completeness check over it - on DuckDB and the BigQuery emulator,
against the Mixpanel stub."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd

from analytics_platform.common import UTC
from analytics_platform.mixpanel import store
from analytics_platform.mixpanel.assets import mixpanel_events
from analytics_platform.mixpanel.checks import late_rows_report, late_rows_within_threshold
from analytics_platform_tests.mixpanel.conftest import DATASET, TABLE, materialize_events, mp_event, ts

D1, D2 = dt.date(2024, 6, 3), dt.date(2024, 6, 4)


def log_rows(warehouse) -> pd.DataFrame:
    return warehouse.query(
        f"SELECT day, run_id, export_query_time, lines_received, rows_inserted, duplicates, rejected, "
        f"export_from_date, export_to_date, purpose FROM `{DATASET}.mixpanel_export_log` "
        "ORDER BY export_query_time, day"
    )


def ingest(warehouse, mixpanel, first, last, run_id, at: dt.datetime, purpose="backfill"):
    return store.ingest_ranges(
        warehouse=warehouse, mixpanel=mixpanel, dataset=DATASET, table=TABLE, ranges=[(first, last)],
        events=["app_open"], now=at, run_id=run_id, clock=lambda: at, purpose=purpose,
    )


def day_events(day: dt.date, n: int, prefix: str, hour: int = 10) -> list[dict]:
    start = dt.datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
    return [mp_event("app_open", start + dt.timedelta(seconds=i), f"u{i}", f"{prefix}-{i}") for i in range(n)]


def test_every_run_records_each_days_own_counts(warehouse, mixpanel, mixpanel_stub):
    first = [mp_event("app_open", ts("2024-06-03T08:00:00"), "u1", "a-1"),
             mp_event("app_open", ts("2024-06-03T08:01:00"), "u2", "a-2"),
             mp_event("app_open", ts("2024-06-03T08:01:00"), "u2", "a-2"),  # same $insert_id twice
             mp_event("app_open", ts("2024-06-03T09:00:00"), "u3", "a-3")]
    mixpanel_stub.add_events(D1, first)
    mixpanel_stub.add_raw_lines(D1, ['{"event": "app_open", "properties": {"distinct_id": "no time"}}'])
    mixpanel_stub.add_events(D2, day_events(D2, 2, "b"))
    t1 = ts("2024-06-05T02:00:00")

    result = ingest(warehouse, mixpanel, D1, D2, "run-1", t1)

    rows = log_rows(warehouse)
    assert [(r.day, r.run_id, r.lines_received, r.rows_inserted, r.duplicates, r.rejected) for r in rows.itertuples()] == [
        (D1, "run-1", 5, 3, 1, 1),
        (D2, "run-1", 2, 2, 0, 0),
    ]
    assert all(pd.Timestamp(t).to_pydatetime() == t1 for t in rows["export_query_time"])
    assert set(rows["export_from_date"]) == {D1} and set(rows["export_to_date"]) == {D2}
    assert result.export_log_rows == 2
    # each day's dagster/row_count stays its own (kept from before)
    assert result.partition_rows == {"2024-06-03": 3, "2024-06-04": 2}

    # a re-export of the same days: nothing new, every valid line a duplicate
    t2 = ts("2024-06-05T03:00:00")
    ingest(warehouse, mixpanel, D1, D2, "run-2", t2)
    # a late event arrives for D1
    mixpanel_stub.add_events(D1, [mp_event("app_open", ts("2024-06-03T23:59:00"), "u9", "a-late")])
    t3 = ts("2024-06-06T01:00:00")
    ingest(warehouse, mixpanel, D1, D1, "run-3", t3, purpose="late_sweep")

    rows = log_rows(warehouse)
    later = [(r.day, r.run_id, r.lines_received, r.rows_inserted, r.duplicates, r.rejected, r.purpose)
             for r in rows.itertuples() if r.run_id != "run-1"]
    assert later == [
        (D1, "run-2", 5, 0, 4, 1, "backfill"),
        (D2, "run-2", 2, 0, 2, 0, "backfill"),
        (D1, "run-3", 6, 1, 4, 1, "late_sweep"),
    ]
    # recording the same rows again adds nothing (a retried write)
    again = store.write_export_log(warehouse, DATASET, [
        {"day": D1, "run_id": "run-3", "export_query_time": t3, "lines_received": 6, "rows_inserted": 1,
         "duplicates": 4, "rejected": 1, "export_from_date": D1, "export_to_date": D1,
         "purpose": "late_sweep", "recorded_at": t3}])
    assert again == 0 and len(log_rows(warehouse)) == 5


def test_completeness_flags_a_day_whose_late_re_export_adds_more_than_the_threshold(warehouse, mixpanel, mixpanel_stub):
    # D1: 95 rows during the day and at its close, 5 more (5.3%) from the sweep after it;
    # D2: 200 rows at its close, 1 more (0.5%) later.
    mixpanel_stub.add_events(D1, day_events(D1, 95, "d1"))
    ingest(warehouse, mixpanel, D1, D1, "refresh-day", ts("2024-06-03T18:00:00"), "refresh")
    mixpanel_stub.add_events(D2, day_events(D2, 200, "d2"))
    ingest(warehouse, mixpanel, D1, D2, "refresh-midnight", ts("2024-06-04T00:00:05"), "refresh")  # closes D1
    mixpanel_stub.add_events(D1, day_events(D1, 5, "d1-late", hour=23))
    ingest(warehouse, mixpanel, D1, D1, "sweep-1", ts("2024-06-04T01:00:00"), "late_sweep")
    ingest(warehouse, mixpanel, D2, D2, "refresh-close-d2", ts("2024-06-05T00:00:05"), "refresh")  # closes D2
    mixpanel_stub.add_events(D2, day_events(D2, 1, "d2-late", hour=22))
    ingest(warehouse, mixpanel, D1, D2, "sweep-2", ts("2024-06-05T01:00:00"), "late_sweep")

    report = {r.day: r for r in late_rows_report(warehouse, DATASET, D1, D2, max_percent=1.0)}
    assert (report[D1].rows_at_close, report[D1].late_rows, report[D1].flagged) == (95, 5, True)
    assert (report[D2].rows_at_close, report[D2].late_rows, report[D2].flagged) == (200, 1, False)
    assert report[D1].late_percent == round(500 / 95, 3)
    # a looser threshold flags nothing
    assert not any(r.flagged for r in late_rows_report(warehouse, DATASET, D1, D2, max_percent=10.0))
    # a day not exported since it ended is not judged yet: everything counts as at close
    mixpanel_stub.add_events(D2 + dt.timedelta(days=1), day_events(D2 + dt.timedelta(days=1), 3, "d3"))
    ingest(warehouse, mixpanel, D2 + dt.timedelta(days=1), D2 + dt.timedelta(days=1), "r", ts("2024-06-05T09:00:00"))
    open_day = late_rows_report(warehouse, DATASET, D2 + dt.timedelta(days=1), D2 + dt.timedelta(days=1), 1.0)
    assert [(r.rows_at_close, r.late_rows, r.flagged) for r in open_day] == [(3, 0, False)]


def test_the_asset_check_warns_on_a_recent_incomplete_day(duckdb_warehouse, mixpanel, mixpanel_stub, monkeypatch):
    day = dt.datetime.now(UTC).date() - dt.timedelta(days=3)
    start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    mixpanel_stub.add_events(day, day_events(day, 50, "x"))
    ingest(duckdb_warehouse, mixpanel, day, day, "close", start + dt.timedelta(days=1, seconds=5), "refresh")

    def run_check():
        result = dg.materialize(
            [mixpanel_events, late_rows_within_threshold],
            selection=dg.AssetSelection.checks(late_rows_within_threshold),
            resources={"warehouse": duckdb_warehouse, "mixpanel": mixpanel},
        )
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation

    ok = run_check()
    assert ok.passed and ok.metadata["days_logged"].value == 1
    mixpanel_stub.add_events(day, day_events(day, 2, "x-late", hour=20))  # 4% late
    ingest(duckdb_warehouse, mixpanel, day, day, "sweep", start + dt.timedelta(days=1, hours=1), "late_sweep")
    flagged = run_check()
    assert not flagged.passed and flagged.severity == dg.AssetCheckSeverity.WARN
    assert flagged.metadata["flagged"].value == [
        {"day": day.isoformat(), "rows_at_close": 50, "late_rows": 2, "late_percent": 4.0}
    ]
    monkeypatch.setenv("MIXPANEL_LATE_ROWS_MAX_PERCENT", "5")
    assert run_check().passed


def test_an_asset_run_writes_the_log_with_its_run_id(duckdb_warehouse, mixpanel, mixpanel_stub):
    mixpanel_stub.add_events(D1, day_events(D1, 3, "c"))
    mixpanel_stub.add_events(D2, day_events(D2, 4, "c2"))
    result = materialize_events(duckdb_warehouse, mixpanel, partition_range=("2024-06-03", "2024-06-04"))
    rows = log_rows(duckdb_warehouse)
    assert set(rows["run_id"]) == {result.run_id}
    assert list(rows["rows_inserted"]) == [3, 4] and list(rows["purpose"]) == ["backfill", "backfill"]
