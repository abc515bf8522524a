"""The asset through Dagster: run config (and env defaults), metadata, dry run, checks,
the high-churn Slack summary (real PostgreSQL, Slack stub over HTTP)."""

from __future__ import annotations

import datetime as dt
import re

import dagster as dg
import pytest

from analytics_platform.kpis.assets import WeeklyKpiConfig, build_params
from analytics_platform.resources.slack import SlackResource

from .conftest import AS_OF, WEEK, days_before
from .helpers import check_results, log_messages, materialize, metadata, observations, slack_outbox

AS_OF_ISO = AS_OF.isoformat()


@pytest.fixture
def learners(kpi_db):
    db = kpi_db
    db.goal("risky", 50.0)
    db.exams("risky", [60.0, 70.0], at=days_before(25))  # S = 1 - e^(-25/14) = 0.83 > 0.7
    db.exams("riskier", [20.0], at=days_before(29))  # S = 0.87
    db.exams("calm", [90.0], at=days_before(8))  # S = 0.43
    db.feature("no_scores", days_before(18))  # S = 0.72, P not computable
    db.exams("broken", [float("nan")], at=days_before(10))
    db.attempt("active", days_before(1))
    db.kpi_row("calm", {"E_t": 5, "P": 0.1, "S": 0.2})
    return db


def test_materialization_metadata_logs_and_checks(learners, app_db, tmp_path):
    result = materialize(app_db, slack_outbox(tmp_path), as_of=AS_OF_ISO, threshold_days=7)
    meta = metadata(result)
    assert meta["dagster/row_count"] == 4
    assert (meta["inactive_users"], meta["processed"], meta["failed"]) == (5, 4, 1)
    assert (meta["inserted"], meta["updated"], meta["no_scores_s_only"]) == (3, 1, 1)
    assert meta["week_start"] == WEEK.isoformat() and meta["threshold_days"] == 7
    assert meta["high_churn_users"] == 3
    assert [f["user_id"] for f in meta["failed_users"]] == ["broken"]
    assert meta["sample_changes"][0]["user_id"] == "riskier"
    assert dt.datetime.fromisoformat(meta["write_watermark"]).tzinfo is not None
    messages = log_messages(result)
    assert any(re.fullmatch(r"Summary: processed=4, failed=1, threshold=7 days, duration_ms=\d+", m) for m in messages)
    assert any("user=broken error=" in m for m in messages)
    assert any("user=no_scores" in m for m in messages)
    checks = check_results(result)
    assert checks["ps_in_unit_interval"].passed
    assert not checks["no_failed_users"].passed  # 'broken' failed
    assert checks["no_failed_users"].severity == dg.AssetCheckSeverity.WARN


def test_dry_run_is_an_observation_and_writes_nothing(learners, app_db, tmp_path):
    before = learners.table("weekly_kpi")
    result = materialize(app_db, slack_outbox(tmp_path), as_of=AS_OF_ISO, dry_run=True)
    assert result.get_asset_materialization_events() == []
    [obs] = observations(result)
    assert obs["dry_run"] is True and obs["dagster/row_count"] == 0
    assert (obs["would_insert"], obs["would_update"]) == (3, 1)
    calm = next(r for r in obs["sample_changes"] if r["user_id"] == "calm")
    assert calm["P_old"] == 0.1 and calm["S_old"] == 0.2 and calm["S_new"] != 0.2
    assert "calm" in obs["sample_changes_table"]
    assert learners.table("weekly_kpi") == before
    assert not (tmp_path / "outbox" / "slack.jsonl").exists()  # no alert on a dry run


def test_run_config_defaults_come_from_the_environment_at_run_time(monkeypatch):
    monkeypatch.setenv("INACTIVITY_THRESHOLD_DAYS", "3")
    monkeypatch.setenv("KPI_LOOKBACK_DAYS", "12")
    monkeypatch.setenv("METRICS_USE_BAYESIAN", "true")
    monkeypatch.setenv("METRICS_DEFAULT_TARGET", "55.5")
    monkeypatch.setenv("METRICS_CHURN_HORIZON_DAYS", "21")
    p = build_params(WeeklyKpiConfig(as_of=AS_OF_ISO))
    assert (p.threshold_days, p.lookback_days, p.use_bayesian, p.default_target, p.churn_horizon_days) == (
        3, 12, True, 55.5, 21.0
    )
    p = build_params(WeeklyKpiConfig(as_of=AS_OF_ISO, threshold_days=9, use_bayesian=False, dry_run=True))
    assert (p.threshold_days, p.use_bayesian, p.dry_run, p.lookback_days) == (9, False, True, 12)
    monkeypatch.delenv("INACTIVITY_THRESHOLD_DAYS")
    assert build_params(WeeklyKpiConfig()).threshold_days == 7


def test_env_threshold_applies_to_a_run(learners, app_db, tmp_path, monkeypatch):
    monkeypatch.setenv("INACTIVITY_THRESHOLD_DAYS", "20")
    meta = metadata(materialize(app_db, slack_outbox(tmp_path), as_of=AS_OF_ISO))
    assert meta["threshold_days"] == 20 and meta["inactive_users"] == 2  # risky, riskier


@pytest.mark.parametrize(
    "config, message",
    [
        ({"threshold_days": 10, "lookback_days": 5}, "lookback_days (5) must be >= threshold_days (10)"),
        ({"churn_horizon_days": 0.0}, "churn_horizon_days must be a positive number"),
        ({"as_of": "yesterday"}, "as_of must be an ISO-8601 timestamp"),
    ],
)
def test_invalid_config_fails_fast(kpi_db, app_db, tmp_path, config, message):
    result = materialize(app_db, slack_outbox(tmp_path), raise_on_error=False, **config)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert message in str(failure.message) + str(failure.cause and failure.cause.message)


def test_high_churn_summary_is_one_message_sent_once(learners, app_db, slack_stub):
    slack = SlackResource(**slack_stub.resource_kwargs())
    instance = dg.DagsterInstance.ephemeral()
    meta = metadata(materialize(app_db, slack, instance, as_of=AS_OF_ISO))
    assert meta["high_churn_alert"] == "sent"
    [message] = slack_stub.messages_in("#data-alerts")
    text = message["text"]
    assert "3 learners at high churn risk (S > 0.7)" in text
    # top users, highest S first; failed and low-risk users are not listed
    assert text.index("`riskier`") < text.index("`risky`") < text.index("`no_scores`")
    assert "calm" not in text and "broken" not in text
    # the same as_of again: the data is rewritten identically, the summary is not repeated
    meta = metadata(materialize(app_db, slack, instance, as_of=AS_OF_ISO))
    assert meta["high_churn_alert"] == "no_new_learners"
    # a sensor-triggered run later the same day, same learners: nothing either
    later = (AS_OF + dt.timedelta(hours=6)).isoformat()
    assert metadata(materialize(app_db, slack, instance, as_of=later))["high_churn_alert"] == "no_new_learners"
    assert len(slack_stub.messages_in("#data-alerts")) == 1


def test_high_churn_summary_at_most_once_per_utc_day_listing_only_new_crossers(learners, kpi_db, app_db, slack_stub):
    """Issue 17.2: two KPI runs on the same UTC day send at most one summary; a learner who
    crosses 0.7 after it waits for the next day's summary, which lists only them; a learner
    who is no longer above 0.7 is forgotten, and listed again on a new crossing."""
    slack = SlackResource(**slack_stub.resource_kwargs())
    instance = dg.DagsterInstance.ephemeral()
    assert metadata(materialize(app_db, slack, instance, as_of=AS_OF_ISO))["high_churn_alert"] == "sent"
    kpi_db.exams("newcomer", [65.0], at=days_before(20))  # S = 1 - e^(-20/14) = 0.76
    later_today = (AS_OF + dt.timedelta(hours=9)).isoformat()
    meta = metadata(materialize(app_db, slack, instance, as_of=later_today))
    assert meta["high_churn_alert"] == "already_sent_today"
    assert len(slack_stub.messages_in("#data-alerts")) == 1

    next_day = (AS_OF + dt.timedelta(days=1)).isoformat()
    assert metadata(materialize(app_db, slack, instance, as_of=next_day))["high_churn_alert"] == "sent"
    messages = slack_stub.messages_in("#data-alerts")
    assert len(messages) == 2
    assert "1 learner at high churn risk" in messages[1]["text"] and "`newcomer`" in messages[1]["text"]
    assert "`risky`" not in messages[1]["text"]

    # risky comes back (a fresh exam: active again), later drops out again and crosses anew
    kpi_db.exams("risky", [75.0], at=AS_OF + dt.timedelta(days=1, hours=1))
    two_days = (AS_OF + dt.timedelta(days=2)).isoformat()
    assert metadata(materialize(app_db, slack, instance, as_of=two_days))["high_churn_alert"] == "no_new_learners"
    far = (AS_OF + dt.timedelta(days=20)).isoformat()  # 19 days after risky's return: S = 0.74
    assert metadata(materialize(app_db, slack, instance, as_of=far))["high_churn_alert"] == "sent"
    assert "`risky`" in slack_stub.messages_in("#data-alerts")[2]["text"]


def test_undelivered_summary_is_retried_by_a_rerun(learners, app_db, slack_stub):
    slack = SlackResource(**slack_stub.resource_kwargs())
    slack_stub.outage = True
    meta = metadata(materialize(app_db, slack, as_of=AS_OF_ISO))
    assert meta["high_churn_alert"] == "not_delivered"
    slack_stub.outage = False
    assert metadata(materialize(app_db, slack, as_of=AS_OF_ISO))["high_churn_alert"] == "sent"
    assert len(slack_stub.messages_in("#data-alerts")) == 1


def test_no_high_churn_no_message(kpi_db, app_db, tmp_path):
    kpi_db.exams("calm", [90.0], at=days_before(8))
    meta = metadata(materialize(app_db, slack_outbox(tmp_path), as_of=AS_OF_ISO))
    assert meta["high_churn_alert"] == "none"
    assert not (tmp_path / "outbox" / "slack.jsonl").exists()


def test_range_check_fails_on_out_of_range_values_from_another_writer(learners, app_db, tmp_path):
    learners.kpi_row("outsider", {"P": 1.5, "S": "high"})
    result = materialize(app_db, slack_outbox(tmp_path), as_of=AS_OF_ISO)
    check = check_results(result)["ps_in_unit_interval"]
    assert not check.passed
    meta = {k: getattr(v, "value", v) for k, v in check.metadata.items()}
    assert (meta["bad_P"], meta["bad_S"], meta["examples"]) == (1, 1, ["outsider"])


def test_no_inactive_users_run(kpi_db, app_db, tmp_path):
    kpi_db.attempt("active", days_before(1))
    result = materialize(app_db, slack_outbox(tmp_path), as_of=AS_OF_ISO)
    meta = metadata(result)
    assert meta["dagster/row_count"] == 0 and meta["inactive_users"] == 0
    assert "No inactive users found (threshold=7 days)" in log_messages(result)
    assert all(c.passed for c in check_results(result).values())
