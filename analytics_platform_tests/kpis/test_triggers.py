"""Acceptance 5 and the schedule: the sensor fires on an external write to weekly_kpi and
not after the asset's own run (real PostgreSQL, ephemeral Dagster instance)."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.test_utils import create_run_for_test

from analytics_platform.kpis.assets import WEEKLY_KPI_OP
from analytics_platform.kpis.rules import Cursor
from analytics_platform.kpis.schedules import DAILY_CRON, WEEKLY_KPI_JOB, weekly_kpi_daily
from analytics_platform.kpis.sensors import weekly_kpi_external_write_sensor

from .conftest import AS_OF, WEEK, days_before
from .helpers import materialize, slack_outbox


class Ticker:
    """Evaluates the sensor like the daemon does: one context per tick, cursor carried over."""

    def __init__(self, app_db, instance: dg.DagsterInstance) -> None:
        self.app_db = app_db
        self.instance = instance
        self.cursor = None

    def tick(self):
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"app_db": self.app_db}
        )
        outcome = weekly_kpi_external_write_sensor(context)
        self.cursor = context.cursor
        return outcome


def external_write(db, user: str, updated_at_sql: str = "clock_timestamp()") -> None:
    """What the daily KPI batch does: rewrite the row (P/S included) and stamp updated_at."""
    db.run(
        "INSERT INTO weekly_kpi (user_id, week_start, kpis, updated_at) "
        f"VALUES (:u, :w, CAST(:k AS jsonb), {updated_at_sql}) "
        "ON CONFLICT (user_id, week_start) DO UPDATE SET kpis = EXCLUDED.kpis, updated_at = EXCLUDED.updated_at",
        [{"u": user, "w": WEEK, "k": json.dumps({"I_t": 1, "E_t": 2, "R_t": 3, "A_t": 4, "P": 0.99, "S": 0.01})}],
    )


@pytest.fixture
def seeded(kpi_db):
    kpi_db.exams("u1", [80.0], at=days_before(10))
    kpi_db.exams("u2", [60.0], at=days_before(20))
    return kpi_db


def test_fires_on_external_write_not_after_own_run(seeded, app_db, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    ticker = Ticker(app_db, instance)
    slack = slack_outbox(tmp_path)
    external_write(seeded, "u1")  # history before the sensor existed

    first = ticker.tick()
    assert isinstance(first, dg.SkipReason) and "initialised" in first.skip_message
    assert isinstance(ticker.tick(), dg.SkipReason)

    # the asset's own run rewrites rows: no trigger
    materialize(app_db, slack, instance, as_of=AS_OF.isoformat())
    own = ticker.tick()
    assert isinstance(own, dg.SkipReason), own

    # the daily KPI batch overwrites u2's P/S: a recalculation is requested
    external_write(seeded, "u2")
    request = ticker.tick()
    assert isinstance(request, dg.RunRequest), request
    assert request.job_name in (None, WEEKLY_KPI_JOB)
    assert request.tags["analytics_platform/trigger"] == "weekly_kpi_external_write"
    as_of = request.run_config["ops"][WEEKLY_KPI_OP]["config"]["as_of"]
    assert dt.datetime.fromisoformat(as_of).tzinfo is not None
    assert isinstance(ticker.tick(), dg.SkipReason)  # reported once

    # the requested run restores u2's P/S; its own writes do not trigger again
    materialize(app_db, slack, instance, as_of=AS_OF.isoformat())
    assert seeded.kpis("u2")["P"] != 0.99
    assert seeded.kpis("u2")["I_t"] == 1  # the batch's keys are kept
    assert isinstance(ticker.tick(), dg.SkipReason)
    assert isinstance(ticker.tick(), dg.SkipReason)


def test_fires_on_a_write_that_commits_late(seeded, app_db):
    """A batch transaction that started before the newest row (now() = its start) but
    committed after the last tick is still noticed."""
    ticker = Ticker(app_db, dg.DagsterInstance.ephemeral())
    external_write(seeded, "u1")
    ticker.tick()
    hi = Cursor.from_json(ticker.cursor).hi
    external_write(seeded, "u2", updated_at_sql=f"TIMESTAMPTZ '{(hi - dt.timedelta(minutes=5)).isoformat()}'")
    assert isinstance(ticker.tick(), dg.RunRequest)
    assert isinstance(ticker.tick(), dg.SkipReason)


def test_own_run_right_after_initialisation_and_inserts(seeded, app_db, tmp_path):
    """The asset inserting new rows (not only updating) is its own write too."""
    instance = dg.DagsterInstance.ephemeral()
    ticker = Ticker(app_db, instance)
    ticker.tick()
    materialize(app_db, slack_outbox(tmp_path), instance, as_of=AS_OF.isoformat())
    assert isinstance(ticker.tick(), dg.SkipReason)
    with seeded.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM weekly_kpi")).scalar() == 2


def test_skips_while_a_recalculation_is_in_progress_and_keeps_the_cursor(seeded, app_db):
    instance = dg.DagsterInstance.ephemeral()
    ticker = Ticker(app_db, instance)
    ticker.tick()
    external_write(seeded, "u1")
    run = create_run_for_test(instance, job_name=WEEKLY_KPI_JOB, status=dg.DagsterRunStatus.STARTED)
    skipped = ticker.tick()
    assert isinstance(skipped, dg.SkipReason) and "in progress" in skipped.skip_message
    instance.report_run_failed(run)
    assert isinstance(ticker.tick(), dg.RunRequest)  # the write is not forgotten


def test_skips_when_weekly_kpi_does_not_exist(bare_db, app_db):
    outcome = Ticker(app_db, dg.DagsterInstance.ephemeral()).tick()
    assert isinstance(outcome, dg.SkipReason) and "does not exist" in outcome.skip_message


def test_daily_schedule_runs_with_as_of_the_scheduled_time():
    assert weekly_kpi_daily.cron_schedule == DAILY_CRON == "0 2 * * *"
    assert weekly_kpi_daily.execution_timezone == "UTC"
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2024, 6, 6, 2, tzinfo=dt.timezone.utc))
    request = weekly_kpi_daily.evaluate_tick(context).run_requests[0]
    assert request.run_config == {"ops": {WEEKLY_KPI_OP: {"config": {"as_of": "2024-06-06T02:00:00+00:00"}}}}
    assert request.run_key == "weekly_kpi_daily:2024-06-06T02:00:00+00:00"
