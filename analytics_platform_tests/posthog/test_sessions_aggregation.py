"""Acceptance 1, 2, 4 and 5: every column of hand-made sessions, on DuckDB AND the
BigQuery emulator (the ``warehouse`` fixture is parametrized over both)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analytics_platform_tests.posthog.data import (
    D,
    OUT,
    metadata_of,
    materialize,
    read_sessions,
    rows_by_id,
    ts,
)


def _ts(value):
    return None if value is None or pd.isna(value) else pd.Timestamp(value).tz_convert("UTC").to_pydatetime()


def _none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT else value


def test_every_column_of_hand_made_sessions(loaded):
    """Acceptance 1 (+5 on the bigquery param): each column equals the hand computation."""
    result = materialize(loaded, partition="2024-06-03")
    assert result.success
    rows = rows_by_id(read_sessions(loaded, D))
    # S0 started the day before (23:50) and S4 the day after: not in D
    assert sorted(rows) == ["S1", "S2", "S3"]

    s1 = rows["S1"]
    # anon-1 at the first event, u1 from the second on: the latest event's distinct_id
    assert s1["distinct_id"] == "u1"
    assert s1["firebase_user_id"] == "u1"
    assert str(s1["session_date"])[:10] == "2024-06-03"
    assert _ts(s1["session_start"]) == ts("2024-06-03 10:00:00")
    assert _ts(s1["session_end"]) == ts("2024-06-03 10:15:30.5")
    assert s1["duration_seconds"] == pytest.approx(15 * 60 + 30.5)
    assert s1["event_count"] == 11
    assert s1["pageview_count"] == 1
    assert s1["screen_count"] == 1
    assert s1["autocapture_count"] == 2
    assert s1["events_created_count"] == 2
    assert s1["quiz_started_count"] == 1
    assert s1["quiz_completed_count"] == 1
    assert s1["scroll_event_count"] == 3  # the one without touch_y still counts as a scroll
    assert s1["max_scroll_depth"] == pytest.approx(600 / 800)  # max(300/800, 600/800)
    # Firebase: start and end instants included, 1 µs outside excluded, other users ignored
    assert s1["firebase_event_count"] == 3
    assert _ts(s1["user_created_at"]) == ts("2024-05-01 10:00:00")
    assert s1["country"] == "DE"
    assert _ts(s1["_loaded_at"]) is not None
    # carried from the LATEST export version of S1
    assert s1["entry_current_url"] == "https://app.example/home"
    assert bool(s1["is_bounce"]) is False
    assert s1["channel_type"] == "Direct"
    assert s1["entry_utm_source"] == "newsletter"
    assert s1["entry_utm_campaign"] == "june"

    s2 = rows["S2"]
    assert s2["distinct_id"] == "u2" and s2["firebase_user_id"] == "u2"
    assert _ts(s2["session_start"]) == ts("2024-06-03 23:59:00")
    assert _ts(s2["session_end"]) == ts("2024-06-04 00:10:00")
    assert s2["duration_seconds"] == pytest.approx(11 * 60)
    assert (s2["event_count"], s2["pageview_count"], s2["screen_count"], s2["autocapture_count"]) == (4, 1, 1, 0)
    assert (s2["events_created_count"], s2["quiz_started_count"], s2["quiz_completed_count"]) == (0, 0, 0)
    assert s2["scroll_event_count"] == 2
    assert s2["max_scroll_depth"] == pytest.approx(1.0)  # max(clamp(-50/700)=0, clamp(2000/700)=1)
    assert s2["firebase_event_count"] == 1  # 00:01 next day counted, 23:58:59 before start not
    assert s2["country"] == "US"
    assert _ts(s2["user_created_at"]) == ts("2024-05-02 11:30:00")
    assert s2["channel_type"] == "Organic Search"

    s3 = rows["S3"]
    assert s3["distinct_id"] == "u3"
    assert s3["duration_seconds"] == pytest.approx(5.0)
    assert (s3["event_count"], s3["pageview_count"], s3["scroll_event_count"]) == (2, 1, 1)
    assert _none(s3["max_scroll_depth"]) is None  # screen_height 0: no usable scroll event
    # missing in Firebase users: the users columns are NULL, but u3's Firebase events are
    # counted all the same (12:00:01 is inside 12:00:00 .. 12:00:05)
    assert _none(s3["firebase_user_id"]) is None
    assert s3["firebase_event_count"] == 1
    assert _ts(s3["user_created_at"]) is None
    assert _none(s3["country"]) is None
    # no export row for S3: carried columns NULL
    assert _none(s3["entry_current_url"]) is None

    meta = metadata_of(result)
    assert len(meta) == 1 and meta[0]["partition"] == "2024-06-03"
    assert meta[0]["dagster/row_count"] == 3
    assert meta[0]["events_without_session_id"] == 2
    assert meta[0]["sessions_without_firebase_user"] == 1
    assert meta[0]["sessions_spanning_midnight"] == 1
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "unique_session_id_per_partition": True,
        "unique_session_id_table_wide": True,
        "session_end_not_before_start": True,
        "non_negative_counts": True,
    }


def test_midnight_session_belongs_to_start_day_only(loaded):
    """Acceptance 2: 23:59 -> 00:10 belongs to its start date; the next day does not get it;
    a session that started the day before is not in today's partition."""
    assert materialize(loaded, partition="2024-06-04").success
    assert materialize(loaded, partition="2024-06-02").success
    assert materialize(loaded, partition="2024-06-03").success
    by_day = {
        day: sorted(read_sessions(loaded, pd.Timestamp(day).date())["session_id"])
        for day in ("2024-06-02", "2024-06-03", "2024-06-04")
    }
    assert by_day == {"2024-06-02": ["S0"], "2024-06-03": ["S1", "S2", "S3"], "2024-06-04": ["S4"]}
    s0 = rows_by_id(read_sessions(loaded, pd.Timestamp("2024-06-02").date()))["S0"]
    assert _ts(s0["session_end"]) == ts("2024-06-03 00:20:00")  # events after midnight included
    assert s0["event_count"] == 2 and s0["quiz_completed_count"] == 1
    assert s0["firebase_event_count"] == 0  # Firebase user with no event in the session
    total = loaded.query(f"SELECT COUNT(*) AS n, COUNT(DISTINCT session_id) AS d FROM `{OUT}.sessions`")
    assert int(total.iloc[0]["n"]) == int(total.iloc[0]["d"]) == 5
