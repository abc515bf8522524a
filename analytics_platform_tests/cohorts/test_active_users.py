"""The old service's "future enhancements": the active-yesterday check (WARN) with its
daily Slack summary (once per day), and opt-in removal with ``$unset`` in Mixpanel."""

from __future__ import annotations

import pytest

from analytics_platform.cohorts import tables as T
from analytics_platform.cohorts.assets import ACTIVE_CHECK, TEMP_USERS_KEY
from analytics_platform.cohorts.rules import LAST_UPDATED_PROPERTY, MARKER_PROPERTY
from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform.resources.slack import SlackResource
from analytics_platform_tests.cohorts.conftest import (
    COHORT_DATASET,
    audit_rows,
    check_evaluation,
    event,
    materialize,
    metadata_of,
    privacy,
    restore,
    seed_events,
    seed_temp_users,
    temp_users,
    ts,
)

AS_OF = "2024-06-06T11:00:00Z"  # yesterday = 2024-06-05 (UTC)


@pytest.fixture
def stub_mixpanel(mixpanel_stub, tmp_path) -> MixpanelResource:
    return MixpanelResource(**mixpanel_stub.resource_kwargs())


@pytest.fixture
def stub_slack(slack_stub, tmp_path) -> SlackResource:
    return SlackResource(**slack_stub.resource_kwargs(), default_channel="#data-alerts")


def seed_activity(warehouse) -> None:
    """Five temp users; only ``active`` and ``active_unsynced`` count as active yesterday."""
    synced = ts("2024-06-04T11:00:00")
    restored = ts("2024-06-04T10:00:30")
    seed_temp_users(warehouse, ["active", "quiet", "day_before", "cohort_events_only"], synced_at=synced, restore_event_at=restored)
    seed_temp_users(warehouse, ["active_unsynced"], restore_event_at=restored)
    seed_temp_users(warehouse, ["own_session"], synced_at=synced, privacy_event_at=ts("2024-06-05T08:00:00"), restore_event_at=ts("2024-06-05T08:01:00"))
    seed_events(
        warehouse,
        [
            event("level_complete", "active", ts("2024-06-05T12:00:00")),
            event("level_complete", "active", ts("2024-06-05T23:59:59")),
            event("level_complete", "active_unsynced", ts("2024-06-05T00:00:00")),
            event("level_complete", "quiet", ts("2024-06-06T00:00:00")),  # today, not yesterday
            event("level_complete", "day_before", ts("2024-06-04T23:59:59")),
            privacy("cohort_events_only", ts("2024-06-05T09:00:00"), "d-x"),  # the rule's own events
            event("tutorial_step", "own_session", ts("2024-06-05T08:00:30")),  # before its restore
        ],
    )


def test_active_yesterday_check_warns_and_lists_them(duckdb_warehouse, local_mixpanel, local_slack):
    seed_activity(duckdb_warehouse)

    result = materialize(duckdb_warehouse, local_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF)

    evaluation = check_evaluation(result, ACTIVE_CHECK)
    assert not evaluation.passed
    assert evaluation.severity.value == "WARN"
    meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
    assert meta["day"] == "2024-06-05"
    assert meta["active_yesterday"] == 2
    assert meta["distinct_ids"] == ["active", "active_unsynced"]  # most events first
    assert len(temp_users(duckdb_warehouse)) == 6  # nothing removed without opting in
    assert result.success  # a WARN never fails the run


def test_no_active_user_passes_and_sends_nothing(duckdb_warehouse, local_mixpanel, stub_slack, slack_stub):
    seed_temp_users(duckdb_warehouse, ["quiet"])
    seed_events(duckdb_warehouse, [event("level_complete", "someone_else", ts("2024-06-05T12:00:00"))])

    result = materialize(duckdb_warehouse, local_mixpanel, stub_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF)

    assert check_evaluation(result, ACTIVE_CHECK).passed
    assert slack_stub.messages == []


def test_daily_slack_summary_is_sent_once_per_day(duckdb_warehouse, local_mixpanel, stub_slack, slack_stub):
    seed_activity(duckdb_warehouse)

    materialize(duckdb_warehouse, local_mixpanel, stub_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF)
    materialize(duckdb_warehouse, local_mixpanel, stub_slack, keys=[TEMP_USERS_KEY], as_of="2024-06-06T15:00:00Z")

    messages = slack_stub.messages_in("#data-alerts")
    assert len(messages) == 1
    text = messages[0]["text"]
    assert "2 of 6" in text and "2024-06-05" in text
    assert "active" in str(messages[0].get("blocks"))

    # the next day's activity gets its own summary
    seed_events(duckdb_warehouse, [event("level_complete", "quiet", ts("2024-06-06T12:00:00"))])
    materialize(duckdb_warehouse, local_mixpanel, stub_slack, keys=[TEMP_USERS_KEY], as_of="2024-06-07T11:00:00Z")
    assert len(slack_stub.messages_in("#data-alerts")) == 2


def test_undelivered_summary_is_retried_by_the_next_run(duckdb_warehouse, local_mixpanel, stub_slack, slack_stub):
    seed_activity(duckdb_warehouse)
    slack_stub.outage = True

    first = materialize(duckdb_warehouse, local_mixpanel, stub_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF)
    assert first.success
    assert slack_stub.messages == []
    slack_stub.outage = False
    materialize(duckdb_warehouse, local_mixpanel, stub_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF)

    assert len(slack_stub.messages_in("#data-alerts")) == 1
    statuses = [s for s in audit_rows(duckdb_warehouse)["status"] if s in ("sent", "failed")]
    assert statuses == ["failed", "sent"]


def test_remove_active_deletes_unsets_and_never_reinserts(duckdb_warehouse, stub_mixpanel, mixpanel_stub, local_slack):
    seed_activity(duckdb_warehouse)
    # ``active`` is also re-detectable from the events of the window
    seed_events(
        duckdb_warehouse,
        [privacy("active", ts("2024-06-05T07:00:00"), "d-act"), restore("real-act", ts("2024-06-05T07:00:20"), "d-act")],
    )

    result = materialize(duckdb_warehouse, stub_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF, remove_active=True)

    remaining = set(temp_users(duckdb_warehouse)["distinct_id"])
    assert remaining == {"quiet", "day_before", "cohort_events_only", "own_session"}
    # only the marked profile needed an $unset
    updates = [u for r in mixpanel_stub.engage_requests for u in r["updates"]]
    assert updates == [
        {"$token": mixpanel_stub.project_token, "$distinct_id": "active", "$unset": [MARKER_PROPERTY, LAST_UPDATED_PROPERTY], "$ignore_time": True}
    ]
    removed = duckdb_warehouse.query(f"SELECT * FROM `{COHORT_DATASET}.{T.REMOVED_TABLE}` ORDER BY distinct_id")
    assert list(removed["distinct_id"]) == ["active", "active_unsynced"]
    assert set(removed["run_id"]) == {result.run_id}
    assert removed.set_index("distinct_id").loc["active", "last_active_at"] == ts("2024-06-05T23:59:59")
    meta = metadata_of(result, TEMP_USERS_KEY)
    assert (meta["active_yesterday"], meta["removed"]) == (2, 2)
    assert check_evaluation(result, ACTIVE_CHECK).passed  # none of them is left in the cohort
    steps = audit_rows(duckdb_warehouse, result.run_id)
    removal = steps[steps["step"].str.endswith("remove_active")]
    assert list(zip(removal["step"], removal["status"])) == [("start_remove_active", "started"), ("end_remove_active", "success")]
    assert removal.iloc[-1]["details"]["removed"] == 2

    # a later run over the same window neither re-inserts nor re-sends
    again = materialize(duckdb_warehouse, stub_mixpanel, local_slack, as_of=AS_OF, remove_active=True)
    assert set(temp_users(duckdb_warehouse)["distinct_id"]) == remaining
    assert metadata_of(again, TEMP_USERS_KEY)["previously_removed"] == 1
    assert len(mixpanel_stub.engage_requests) == 1  # the remaining users were all marked already


def test_failed_unset_keeps_the_user_for_a_later_run(duckdb_warehouse, stub_mixpanel, mixpanel_stub, local_slack):
    seed_activity(duckdb_warehouse)
    mixpanel_stub.reject_engage("invalid profile update", times=1)

    result = materialize(duckdb_warehouse, stub_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF, remove_active=True)

    remaining = set(temp_users(duckdb_warehouse)["distinct_id"])
    assert "active" in remaining  # its marker is still set in Mixpanel: keep it, retry later
    assert "active_unsynced" not in remaining  # never marked: nothing to unset
    meta = metadata_of(result, TEMP_USERS_KEY)
    assert (meta["removed"], meta["unset_failed"]) == (1, 1)
    assert not check_evaluation(result, ACTIVE_CHECK).passed
    steps = audit_rows(duckdb_warehouse, result.run_id)
    assert steps[steps["step"] == "end_remove_active"].iloc[0]["status"] == "partial"

    again = materialize(duckdb_warehouse, stub_mixpanel, local_slack, keys=[TEMP_USERS_KEY], as_of=AS_OF, remove_active=True)
    assert "active" not in set(temp_users(duckdb_warehouse)["distinct_id"])
    assert metadata_of(again, TEMP_USERS_KEY)["removed"] == 1
    assert [u["$distinct_id"] for u in mixpanel_stub.engage_batches[-1]] == ["active"]  # accepted this time
    assert "$unset" in mixpanel_stub.engage_batches[-1][0]
