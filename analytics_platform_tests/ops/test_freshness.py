"""Issue 17.1: freshness that can fail, evaluated on its own sensor, one Slack message per
episode (and one when it recovers), nothing for an asset never fresh on this instance.

Time travel: Dagster's clock (``freeze_time``: sensor ticks, event timestamps) and the
checks' clock (``freshness.now``) are moved together; the refreshes are real runs of
``mixpanel_events`` (Mixpanel stub over HTTP, DuckDB), the sensors are evaluated by their
own tick functions, the messages land in the Slack stub.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time

from analytics_platform.mixpanel.assets import EVENTS_KEY, mixpanel_events
from analytics_platform.ops import freshness as F
from analytics_platform.ops.alerts import (
    FRESH,
    NEVER_FRESH,
    RECOVERED_MESSAGE,
    STALE,
    STALE_MESSAGE,
    EpisodeState,
    advance_episode,
    after_delivery,
)
from analytics_platform.definitions import defs as platform_defs
from analytics_platform.ops.definitions import defs as ops_defs
from analytics_platform.ops.sensors import freshness_slack_alert
from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform.resources.slack import SlackResource
from analytics_platform.resources.warehouse import DuckDBWarehouse
from analytics_platform_tests.mixpanel.conftest import mp_event

UTC = dt.timezone.utc
D = dt.date(2024, 6, 5)


def at(hhmm: str, day: dt.date = D) -> dt.datetime:
    h, m = map(int, hhmm.split(":"))
    return dt.datetime(day.year, day.month, day.day, h, m, tzinfo=UTC)


# ------------------------------------------------------------------------- pure rules
def test_current_day_is_stale_45_minutes_after_its_last_refresh():
    refreshed = {D: at("08:30")}
    verdict = F.current_day_verdict(at("09:15"), refreshed.get)
    assert verdict.passed and verdict.fresh_until == at("09:15")
    verdict = F.current_day_verdict(at("09:16"), refreshed.get)
    assert not verdict.passed and verdict.overdue_since == at("09:15")
    # no refresh of the day at all: overdue 45 minutes after midnight
    assert F.current_day_verdict(at("01:00"), {}.get).overdue_since == at("00:45")
    # just after midnight the previous day's late refresh still counts, for 45 minutes
    yesterday = {D - dt.timedelta(days=1): at("23:50", D - dt.timedelta(days=1))}
    assert F.current_day_verdict(at("00:20"), yesterday.get).passed
    assert not F.current_day_verdict(at("00:40"), {D - dt.timedelta(days=1): at("23:00", D - dt.timedelta(days=1))}.get).passed


def test_yesterdays_partition_is_due_by_06_utc():
    y = D - dt.timedelta(days=1)
    # before 06:00 the day before yesterday is the one expected
    assert F.daily_partition_verdict(at("05:59"), {y - dt.timedelta(days=1): at("03:30", y)}.get).passed
    verdict = F.daily_partition_verdict(at("06:00"), {y - dt.timedelta(days=1): at("03:30", y)}.get)
    assert not verdict.passed and verdict.overdue_since == at("06:00") and str(y) in verdict.expected
    verdict = F.daily_partition_verdict(at("07:00"), {y: at("03:31")}.get)
    assert verdict.passed and verdict.fresh_until == at("06:00", D + dt.timedelta(days=1))


def test_weekly_kpi_is_due_daily():
    verdict = F.daily_update_verdict(at("07:00"), at("02:00"))
    assert verdict.passed and verdict.fresh_until == at("06:00", D + dt.timedelta(days=1))
    verdict = F.daily_update_verdict(at("07:00"), at("05:00", D - dt.timedelta(days=1)))
    assert not verdict.passed and verdict.overdue_since == at("06:00")
    assert not F.daily_update_verdict(at("07:00"), None).passed


def test_episode_transitions():
    s = EpisodeState()
    s = advance_episode(s, 1, passed=False, has_been_fresh=False, at="t1", description="d")
    assert s.status == NEVER_FRESH and s.pending is None
    s = advance_episode(s, 2, passed=True, has_been_fresh=True, at="t2", description="d")
    assert s.status == FRESH and s.pending is None
    s = advance_episode(s, 3, passed=False, has_been_fresh=True, at="t3", description="d")
    assert s.status == STALE and s.pending == STALE_MESSAGE
    s, _ = after_delivery(s, delivered=False, permanent=False)
    assert s.pending == STALE_MESSAGE and s.attempts == 1  # retried on the next tick
    s, _ = after_delivery(s, delivered=True, permanent=False)
    s = advance_episode(s, 4, passed=False, has_been_fresh=True, at="t4", description="d")
    assert s.status == STALE and s.pending is None and s.since == "t3"  # same episode: no message
    s = advance_episode(s, 5, passed=True, has_been_fresh=True, at="t5", description="d")
    assert s.status == FRESH and s.pending == RECOVERED_MESSAGE
    # an episode whose stale message never went out closes silently
    quiet = advance_episode(EpisodeState(FRESH), 1, passed=False, has_been_fresh=True, at="a", description="d")
    assert advance_episode(quiet, 2, passed=True, has_been_fresh=True, at="b", description="d").pending is None
    # a permanent delivery error is given up after a few attempts
    s = EpisodeState(STALE, pending=STALE_MESSAGE)
    for _ in range(2):
        s, gave_up = after_delivery(s, delivered=False, permanent=True)
        assert not gave_up
    s, gave_up = after_delivery(s, delivered=False, permanent=True)
    assert gave_up and s.pending is None


def test_sensors_are_registered_running():
    sensors = {s.name: s for s in ops_defs.sensors}
    assert sensors["freshness_checks_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["freshness_slack_alert"].default_status == dg.DefaultSensorStatus.RUNNING
    assert "slack" in sensors["freshness_slack_alert"].required_resource_keys
    assert {k.asset_key.to_user_string() for k in F.FRESHNESS_CHECK_KEYS} == {
        "mixpanel_data/mixpanel_events", "posthog_aggregated/sessions", "app_db/user_engagement_signals",
        "app_db/user_milestones", "app_db/weekly_kpi",
    }


# ------------------------------------------------------------------------- time travel
EVENTS_FRESHNESS = next(c for c in F.FRESHNESS_CHECKS if EVENTS_KEY in {k.asset_key for k in c.check_keys})
EVENTS_CHECK_KEY = dg.AssetCheckKey(EVENTS_KEY, F.CHECK_NAME)
EVALUATE = next(s for s in ops_defs.sensors if s.name == "freshness_checks_sensor")


class Platform:
    """One instance, the refresh, Dagster's freshness sensor and the alert sensor, at a
    travelled time."""

    def __init__(self, instance, tmp_path, mixpanel_stub, slack_stub, monkeypatch):
        self.instance = instance
        self.monkeypatch = monkeypatch
        self.mixpanel_stub = mixpanel_stub
        self.resources = {
            "warehouse": DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb")),
            "mixpanel": MixpanelResource(**{**mixpanel_stub.resource_kwargs(), "backoff_initial_seconds": 0.01}),
        }
        self.slack = SlackResource(**slack_stub.resource_kwargs(), default_channel="#data-alerts")
        self.evaluate_cursor = None
        self.alert_cursor = None
        self.served = 0

    @contextlib.contextmanager
    def travel(self, when: dt.datetime):
        with freeze_time(when):
            self.monkeypatch.setattr(F, "now", lambda: when)
            yield

    def refresh(self, when: dt.datetime, day: dt.date | None = None) -> None:
        """The refresh of ``day`` (default: the current day) at ``when``, the asset's checks
        included, as in its job."""
        day = day or when.date()
        self.served += 1
        self.mixpanel_stub.add_events(day.isoformat(), [
            mp_event("app_open", dt.datetime.combine(day, dt.time(0, 1), UTC), f"u{self.served}", f"e{self.served}")
        ])
        with self.travel(when):
            result = dg.materialize(
                [mixpanel_events, EVENTS_FRESHNESS], partition_key=day.isoformat(),
                resources=self.resources, instance=self.instance,
            )
        assert result.success

    def tick(self, when: dt.datetime) -> list[str]:
        """One tick of Dagster's freshness sensor (running what it requests) and one of the
        alert sensor; returns the requested check keys."""
        with self.travel(when):
            result = EVALUATE.evaluate_tick(dg.build_sensor_context(
                instance=self.instance, cursor=self.evaluate_cursor, definitions=platform_defs
            ))
            self.evaluate_cursor = result.cursor
            requested = []
            for request in result.run_requests or []:
                keys = [k for k in request.asset_check_keys or [] if k == EVENTS_CHECK_KEY]
                requested += [k.to_user_string() for k in keys]
                if keys:
                    dg.materialize(
                        [mixpanel_events, EVENTS_FRESHNESS], selection=dg.AssetSelection.checks(*keys),
                        resources=self.resources, instance=self.instance,
                    )
            alert = freshness_slack_alert.evaluate_tick(dg.build_sensor_context(
                instance=self.instance, cursor=self.alert_cursor, resources={"slack": self.slack}
            ))
            self.alert_cursor = alert.cursor
        return requested

    def latest(self) -> dg.AssetCheckEvaluation:
        return F.previous_evaluation(self.instance, EVENTS_CHECK_KEY)


@pytest.fixture
def platform(tmp_path, mixpanel_stub, slack_stub, monkeypatch):
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://dagster.example.test:3000")
    with dg.instance_for_test() as instance:
        yield Platform(instance, tmp_path, mixpanel_stub, slack_stub, monkeypatch)


def test_freshness_fails_when_the_refresh_stops_and_alerts_once_per_episode(platform, slack_stub):
    p = platform
    for hhmm in ("08:00", "08:15", "08:30"):
        p.refresh(at(hhmm))
        p.tick(at(hhmm) + dt.timedelta(minutes=1))
    assert p.latest().passed and slack_stub.messages == []

    # the refresh stops: fresh until 09:15 (the sensor does not even evaluate before)
    assert p.tick(at("09:10")) == [] and p.latest().passed
    assert p.tick(at("09:16")) == [EVENTS_CHECK_KEY.to_user_string()]
    stale = p.latest()
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.ERROR
    assert stale.metadata[F.OVERDUE_SECONDS_KEY].value == 60
    assert len(slack_stub.messages) == 1 and "Stale: mixpanel_data/mixpanel_events" in slack_stub.messages[0]["text"]
    assert slack_stub.messages[0]["channel"] == "#data-alerts"
    assert "dagster.example.test:3000/assets/mixpanel_data/mixpanel_events" in slack_stub.messages[0]["text"]

    # still stale an hour later, evaluated again (e.g. by the late sweep's run): no second message
    for hhmm in ("09:30", "09:45", "10:15"):
        p.tick(at(hhmm))
    with p.travel(at("10:20")):
        dg.materialize([mixpanel_events, EVENTS_FRESHNESS], selection=dg.AssetSelection.checks(EVENTS_CHECK_KEY),
                       resources=p.resources, instance=p.instance)
    p.tick(at("10:21"))
    assert not p.latest().passed and len(slack_stub.messages) == 1

    # the refresh resumes: one recovery message, then quiet while fresh
    p.refresh(at("10:30"))
    p.tick(at("10:31"))
    p.refresh(at("10:45"))
    p.tick(at("10:46"))
    assert p.latest().passed
    assert len(slack_stub.messages) == 2 and "Fresh again: mixpanel_data/mixpanel_events" in slack_stub.messages[1]["text"]

    # a second episode is a second pair of messages
    p.tick(at("11:31"))
    p.refresh(at("11:45"))
    p.tick(at("11:46"))
    assert [m["text"].split("\n")[0] for m in slack_stub.messages] == [
        ":hourglass: Stale: mixpanel_data/mixpanel_events",
        ":white_check_mark: Fresh again: mixpanel_data/mixpanel_events",
    ] * 2


def test_a_never_fresh_asset_warns_and_posts_nothing(platform, slack_stub):
    """A fresh instance whose data is old (``make dev`` on the 2024 demo days): the check
    fails as a WARN saying "never fresh on this instance", and no message is posted."""
    p = platform
    p.refresh(at("11:00"), day=dt.date(2024, 6, 1))  # an old day (the demo's), materialized today
    for hhmm in ("12:00", "12:01", "13:00"):
        p.tick(at(hhmm))
    latest = p.latest()
    assert not latest.passed
    assert latest.severity == dg.AssetCheckSeverity.WARN
    assert F.NEVER_FRESH in latest.description
    assert slack_stub.messages == []
