"""Acceptance 2: /engage marking over real HTTP against the Mixpanel stub — batch sizes,
exact payload, body-level failures isolated per batch, retries, nothing to sync."""

from __future__ import annotations

import datetime as dt

import pytest

from analytics_platform.cohorts.assets import COHORT_KEY
from analytics_platform.cohorts.rules import LAST_UPDATED_PROPERTY, MARKER_PROPERTY
from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform_tests.cohorts.conftest import (
    materialize,
    metadata_of,
    outbox_lines,
    seed_temp_users,
    temp_users,
    ts,
)

MARKER = "state_loss_temp_user_cohort_v1"


@pytest.fixture
def stub_mixpanel(mixpanel_stub, tmp_path) -> MixpanelResource:
    return MixpanelResource(**mixpanel_stub.resource_kwargs())


def ids(n: int, prefix: str = "tmp") -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(n)]


def sent_ids(requests: list[dict]) -> list[str]:
    return [u["$distinct_id"] for r in requests for u in (r["updates"] or [])]


def mark(duckdb_warehouse, mixpanel, slack, **kwargs):
    return materialize(duckdb_warehouse, mixpanel, slack, keys=[COHORT_KEY], **kwargs)


def test_2500_users_two_requests_exact_payload(duckdb_warehouse, mixpanel_stub, stub_mixpanel, local_slack):
    users = ids(2500)
    seed_temp_users(duckdb_warehouse, users)
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

    result = mark(duckdb_warehouse, stub_mixpanel, local_slack)

    requests = mixpanel_stub.engage_requests
    assert len(requests) == 2
    assert [len(r["updates"]) for r in requests] == [2000, 500]
    assert sorted(sent_ids(requests)) == users
    stamp = requests[0]["updates"][0]["$set"][LAST_UPDATED_PROPERTY]
    for request in requests:
        for update in request["updates"]:
            assert set(update) == {"$token", "$distinct_id", "$set", "$ignore_time"}
            assert update["$ignore_time"] is True  # marking must not move the profile's $last_seen
            assert update["$token"] == mixpanel_stub.project_token
            assert update["$set"] == {MARKER_PROPERTY: MARKER, LAST_UPDATED_PROPERTY: stamp}
    marked_at = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert stamp.endswith("Z") and marked_at >= started
    assert mixpanel_stub.profiles["tmp-00042"][MARKER_PROPERTY] == MARKER

    table = temp_users(duckdb_warehouse)
    assert table["mixpanel_synced_at"].notna().all()
    assert set(table["mixpanel_synced_at"]) == {marked_at}
    meta = metadata_of(result, COHORT_KEY)
    assert (meta["users_marked"], meta["batches"], meta["failures"]) == (2500, 2, 0)
    assert meta["dagster/row_count"] == 2500

    # nothing left to sync: the next run sends nothing
    again = mark(duckdb_warehouse, stub_mixpanel, local_slack)
    assert len(mixpanel_stub.engage_requests) == 2
    assert metadata_of(again, COHORT_KEY)["users_marked"] == 0
    assert metadata_of(again, COHORT_KEY)["batches"] == 0


def test_rejected_batch_stays_unsynced_and_next_run_sends_only_it(duckdb_warehouse, mixpanel_stub, stub_mixpanel, local_slack):
    users = ids(2500)
    seed_temp_users(duckdb_warehouse, users)
    mixpanel_stub.reject_engage("some data points in the request failed validation", times=1)

    result = mark(duckdb_warehouse, stub_mixpanel, local_slack)

    first_batch = sorted(users)[:2000]
    second_batch = sorted(users)[2000:]
    table = temp_users(duckdb_warehouse).set_index("distinct_id")
    unsynced = sorted(table.index[table["mixpanel_synced_at"].isna()])
    assert unsynced == first_batch
    assert table.loc[second_batch, "mixpanel_synced_at"].notna().all()
    meta = metadata_of(result, COHORT_KEY)
    assert (meta["users_marked"], meta["users_failed"], meta["batches"], meta["failures"]) == (500, 2000, 2, 1)
    assert len(mixpanel_stub.engage_requests) == 2  # a body-level rejection is not retried

    mark(duckdb_warehouse, stub_mixpanel, local_slack)
    retry_requests = mixpanel_stub.engage_requests[2:]
    assert len(retry_requests) == 1
    assert sorted(sent_ids(retry_requests)) == first_batch
    assert temp_users(duckdb_warehouse)["mixpanel_synced_at"].notna().all()


@pytest.mark.parametrize("status", [429, 500, 503])
def test_429_and_5xx_are_retried(duckdb_warehouse, mixpanel_stub, stub_mixpanel, local_slack, status):
    seed_temp_users(duckdb_warehouse, ids(3))
    mixpanel_stub.fail_engage(status, times=2, retry_after=0 if status == 429 else None)

    result = mark(duckdb_warehouse, stub_mixpanel, local_slack)

    assert [r["status"] for r in mixpanel_stub.engage_requests] == [status, status, 200]
    assert temp_users(duckdb_warehouse)["mixpanel_synced_at"].notna().all()
    meta = metadata_of(result, COHORT_KEY)
    assert (meta["users_marked"], meta["failures"], meta["requests"]) == (3, 0, 3)


def test_other_4xx_not_retried_and_a_run_where_every_batch_fails_fails(duckdb_warehouse, mixpanel_stub, stub_mixpanel, local_slack):
    seed_temp_users(duckdb_warehouse, ids(3))
    mixpanel_stub.fail_engage(400, times=1)

    result = mark(duckdb_warehouse, stub_mixpanel, local_slack, raise_on_error=False)

    assert not result.success
    assert len(mixpanel_stub.engage_requests) == 1
    assert temp_users(duckdb_warehouse)["mixpanel_synced_at"].isna().all()
    # the next run succeeds and sends them again
    mark(duckdb_warehouse, stub_mixpanel, local_slack)
    assert temp_users(duckdb_warehouse)["mixpanel_synced_at"].notna().all()


def test_nothing_to_sync_sends_nothing(duckdb_warehouse, mixpanel_stub, stub_mixpanel, local_slack):
    seed_temp_users(duckdb_warehouse, ids(5), synced_at=ts("2024-06-01T11:00:00"))

    result = mark(duckdb_warehouse, stub_mixpanel, local_slack)

    assert mixpanel_stub.requests == []
    meta = metadata_of(result, COHORT_KEY)
    assert (meta["users_marked"], meta["batches"], meta["requests"]) == (0, 0, 0)


def test_without_token_updates_go_to_the_local_outbox(duckdb_warehouse, local_mixpanel, local_slack, tmp_path):
    seed_temp_users(duckdb_warehouse, ids(3))

    result = mark(duckdb_warehouse, local_mixpanel, local_slack)

    lines = outbox_lines(tmp_path / "data" / "outbox" / "mixpanel_engage.jsonl")
    assert sorted(line["$distinct_id"] for line in lines) == ids(3)
    assert all(line["$set"][MARKER_PROPERTY] == MARKER for line in lines)
    assert all(line["$token"] == "<MIXPANEL_PROJECT_TOKEN>" for line in lines)
    assert temp_users(duckdb_warehouse)["mixpanel_synced_at"].notna().all()
    assert metadata_of(result, COHORT_KEY)["destination"] == "outbox"


def test_cohort_marker_comes_from_the_environment(duckdb_warehouse, mixpanel_stub, stub_mixpanel, local_slack, monkeypatch):
    monkeypatch.setenv("COHORT_MARKER", "state_loss_temp_user_cohort_v2")
    seed_temp_users(duckdb_warehouse, ids(2))

    mark(duckdb_warehouse, stub_mixpanel, local_slack)

    values = {u["$set"][MARKER_PROPERTY] for r in mixpanel_stub.engage_requests for u in r["updates"]}
    assert values == {"state_loss_temp_user_cohort_v2"}
