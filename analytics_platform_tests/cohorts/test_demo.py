"""The cohorts demo: deterministic export lines whose outcome is the intended one."""

from __future__ import annotations

import datetime as dt
import json

from analytics_platform.demo import cohorts as demo
from analytics_platform.cohorts.assets import ACTIVE_CHECK, COHORT_KEY, TEMP_USERS_KEY
from analytics_platform.demo import DemoContext
from analytics_platform.settings import get_settings
from analytics_platform_tests.cohorts.conftest import (
    check_evaluation,
    materialize,
    metadata_of,
    outbox_lines,
    seed_events,
    temp_users,
)


def as_rows(records: list[dict]) -> list[dict]:
    """Export records -> events-table rows, as the ingestion writes them."""
    rows = []
    for r in records:
        p = r["properties"]
        at = dt.datetime.fromtimestamp(p["time"], tz=dt.timezone.utc)
        rows.append(
            {
                "event_id": p["$insert_id"],
                "event_name": r["event"],
                "distinct_id": p["distinct_id"],
                "event_timestamp": at,
                "inserted_at": dt.datetime.now(dt.timezone.utc),  # as the ingestion stamps it
                "properties": json.dumps(p),
            }
        )
    return rows


def test_seed_is_deterministic_and_idempotent(tmp_path):
    ctx = DemoContext(settings=get_settings(), resources={})
    path = demo.export_path(ctx)
    path.parent.mkdir(parents=True)
    path.write_text('{"event":"impression_game_started","properties":{"time":1717545600,"distinct_id":"x","$insert_id":"mixpanel-demo-1"}}\n')

    demo.seed(ctx)
    first = path.read_text()
    demo.seed(ctx)

    assert path.read_text() == first  # re-seeding replaces only this module's lines
    lines = [json.loads(line) for line in first.splitlines()]
    assert lines[0]["properties"]["$insert_id"] == "mixpanel-demo-1"  # the other domain's line is kept
    ours = [line for line in lines if line["properties"]["$insert_id"].startswith(demo.INSERT_ID_PREFIX)]
    assert ours == demo.demo_events(ctx)
    assert all(dt.datetime.fromtimestamp(line["properties"]["time"], dt.timezone.utc).date() == ctx.demo_date for line in ours)


def test_demo_outcome(duckdb_warehouse, local_mixpanel, local_slack, tmp_path):
    ctx = DemoContext(settings=get_settings(), resources={})
    seed_events(duckdb_warehouse, as_rows(demo.demo_events(ctx)))
    step = demo.steps(ctx)[-1]
    as_of = step.run_config["ops"]["peerplay__state_loss_temp_users"]["config"]["as_of"]
    assert as_of == "2024-06-06T00:00:00Z"

    result = materialize(duckdb_warehouse, local_mixpanel, local_slack, as_of=as_of)

    assert set(temp_users(duckdb_warehouse)["distinct_id"]) == demo.expected_temp_users()
    active = check_evaluation(result, ACTIVE_CHECK)
    assert not active.passed
    assert active.metadata["active_yesterday"].value == demo.ACTIVE_TEMP_USERS
    assert metadata_of(result, COHORT_KEY)["users_marked"] == len(demo.expected_temp_users())
    assert metadata_of(result, TEMP_USERS_KEY)["inserted"] == len(demo.expected_temp_users())
    marked = {line["$distinct_id"] for line in outbox_lines(tmp_path / "data" / "outbox" / "mixpanel_engage.jsonl")}
    assert marked == demo.expected_temp_users()
