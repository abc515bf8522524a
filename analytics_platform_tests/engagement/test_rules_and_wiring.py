"""Pure pieces (rules over aggregates, document validation) and the Dagster wiring
(asset attributes, checks, job, schedule)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from analytics_platform.common import UTC
from analytics_platform.engagement import rules
from analytics_platform.engagement.rules import split_documents, validate_document


def _agg(**overrides):
    row = {c: 0 for c in rules.AGGREGATE_COLUMNS}
    row.update(user_id="u", has_goal=True, has_tier1_event=False, has_tier2_event=False)
    row.update(overrides)
    return row


def test_signal_rules_on_aggregates():
    frame = pd.DataFrame(
        [
            _agg(user_id="fg_240000", max_aligned_foreground_ms=240_000),
            _agg(user_id="fg_239999", max_aligned_foreground_ms=239_999),
            _agg(user_id="sessions_4", max_app_sessions_week0=4),
            _agg(user_id="sessions_3", max_app_sessions_week0=3),
            _agg(user_id="engaged", f0=1, f1=1, f2=1),
            _agg(user_id="retained", **{f"f{k}": 5 for k in range(9)}),
            _agg(user_id="retained_dropoff", **{f"f{k}": 5 for k in range(1, 10)}),
            _agg(user_id="no_goal", has_goal=False, event_count=3),
        ]
    )
    out = rules.compute_signals(frame).set_index("user_id")
    assert list(out.reset_index().columns) == list(rules.SIGNAL_COLUMNS)
    assert out.loc["fg_240000", "customer_app_registration_completed"]
    assert not out.loc["fg_239999", "customer_app_registration_completed"]
    assert out.loc["fg_239999", "customer_app_login_completed"]
    assert out.loc["sessions_4", "customer_app_registration_completed"]
    assert not out.loc["sessions_3", "customer_app_registration_completed"]
    assert out.loc["engaged", "customer_app_engaged"] and not out.loc["engaged", "customer_app_retained"]
    assert out.loc["retained", "customer_app_retained"] and not out.loc["retained", "customer_app_retained_dropoff"]
    assert out.loc["retained_dropoff", "customer_app_retained_dropoff"]
    assert out.loc["retained_dropoff", "customer_app_engagement_dropoff"]
    assert not out.loc["no_goal", "goal_setting_completed"] and out.loc["no_goal", "event_count"] == 3
    assert rules.compute_signals(pd.DataFrame(columns=list(rules.AGGREGATE_COLUMNS))).empty


def test_milestone_rules():
    signals = {f: True for f in rules.SIGNAL_FLAGS}
    frame = pd.DataFrame(
        [
            {"user_id": "t1", **signals, "has_tier1_event": True, "has_tier2_event": False},
            {"user_id": "no_goal", **signals, "goal_setting_completed": False, "has_tier1_event": True, "has_tier2_event": True},
        ]
    )
    out = rules.compute_milestones(frame).set_index("user_id")
    assert out.loc["t1", "tier1_app_retained"] and not out.loc["t1", "tier2_app_retained"]
    assert not out.loc["no_goal"].any()
    with pytest.raises(ValueError, match="has_tier2_event"):
        rules.compute_milestones(frame.drop(columns=["has_tier2_event"]))


def test_document_validation():
    ts = dt.datetime(2024, 6, 1, tzinfo=UTC)
    good = {"path": "app_usage_events/u/events/e", "user_id": "u", "event_id": "e",
            "fields": {"app_id": "a", "foreground_time_ms": 3, "session_id": "s", "timestamp": ts, "extra": 1}}
    row, reasons = validate_document(good)
    assert reasons == [] and row["foreground_time_ms"] == 3 and row["event_timestamp"] == ts
    bad = dict(good, fields=dict(good["fields"], foreground_time_ms=float("nan"), session_id="", app_id=None))
    row, reasons = validate_document(bad)
    assert row is None and len(reasons) == 3
    naive = dict(good, fields=dict(good["fields"], timestamp=dt.datetime(2024, 6, 1)))
    assert validate_document(naive)[0] is None
    split = split_documents(
        [good, bad, dict(good, path="app_usage_events/u/events/e/sub/x"), dict(good, path="other/u/events/e")],
        "app_usage_events", "events",
    )
    assert (len(split.valid), len(split.rejects), split.out_of_scope) == (1, 1, 2)


def test_wiring():
    from analytics_platform.engagement.definitions import defs
    from analytics_platform.engagement.schedules import LATE_DAYS, engagement_daily, partition_for

    specs = {
        "firestore/app_usage_events", "app_db/goals", "app_db/user_goals", "app_db/apps",
        "app_db/app_goal_sub_categories", "app_db/goal_sub_categories",
    }
    materializable = {"engagement/firestore_app_usage_events", "app_db/user_engagement_signals", "app_db/user_milestones"}
    by_key = {}
    for a in defs.assets:
        for key in a.keys if isinstance(a, dg.AssetsDefinition) else [a.key]:
            by_key[key.to_user_string()] = a
    assert set(by_key) == specs | materializable
    for key in materializable:
        a = by_key[key]
        k = dg.AssetKey.from_user_string(key)
        assert a.group_names_by_key[k] == "engagement"
        assert a.specs_by_key[k].owners == ["team:data-platform"]
        assert a.specs_by_key[k].kinds
        assert "Re-run safety" in (a.descriptions_by_key[k] or "")
        assert a.op.name == key.replace("/", "__")
    assert by_key["app_db/user_engagement_signals"].partitions_def is not None
    checks = {(c.asset_key.to_user_string(), c.name) for a in defs.assets if isinstance(a, dg.AssetsDefinition) for c in a.check_specs}
    assert ("app_db/user_engagement_signals", "one_row_per_user_and_date") in checks
    assert ("app_db/user_milestones", "milestones_imply_goal_setting") in checks

    assert engagement_daily.execution_timezone == "UTC"
    assert partition_for(dt.datetime(2024, 6, 6, 1, 30, tzinfo=UTC)) == "2024-06-05"
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2024, 6, 6, 1, 30, tzinfo=UTC))
    requests = engagement_daily(context)
    # yesterday, then the LATE_DAYS days before it again (late uploads), one run each
    assert [r.partition_key for r in requests] == ["2024-06-05", "2024-06-04", "2024-06-03", "2024-06-02"]
    assert LATE_DAYS == 3
    assert requests[0].run_key == "engagement_daily:2024-06-06:2024-06-05"
    assert len({r.run_key for r in requests}) == 4
    next_tick = engagement_daily(
        dg.build_schedule_context(scheduled_execution_time=dt.datetime(2024, 6, 7, 1, 30, tzinfo=UTC))
    )
    assert "2024-06-05" in [r.partition_key for r in next_tick]  # re-evaluated, under a new run key
    assert not {r.run_key for r in next_tick} & {r.run_key for r in requests}

    from analytics_platform.definitions import defs as top

    job = top.resolve_job_def("engagement_daily_job")
    # the signals read Firestore themselves: the job is signals + milestones
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == materializable - {
        "engagement/firestore_app_usage_events"
    }
