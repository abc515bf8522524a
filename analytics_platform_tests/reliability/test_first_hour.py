"""Issue 17.3: a quiet, green local platform. After `make demo`, the first hour of `make dev`
(every schedule and sensor that is on by default, ticking as the daemon would) produces no
failed run and no alert: every tick either starts runs that succeed or skips with a reason,
and the outboxes (Slack alerts, Mixpanel profile updates) get nothing new.

The demo runs in-process on the local default (DuckDB, local Mixpanel files, local
Firestore export, outboxes; the test's PostgreSQL as the application database) with its
runs in a SQLite instance under a temporary DAGSTER_HOME, as `make demo` does.  Then time
travels (Dagster's clock and the freshness checks' clock) through the hour after "now":
each schedule is evaluated at each of its cron ticks, each sensor every minute (every 2
minutes for the 120 s one), and the runs they request are executed in-process on the same
instance, then the sensors see them.  Since `make dev` may start at any hour, each daily
schedule's next tick is driven too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.defs_state.base import set_defs_state_storage
from dagster._core.test_utils import freeze_time

UTC = dt.timezone.utc


def _outbox_lines(data_dir: Path) -> dict[str, int]:
    outbox = data_dir / "outbox"
    if not outbox.exists():
        return {}
    return {p.name: len(p.read_text().splitlines()) for p in sorted(outbox.glob("*.jsonl"))}


def _cron_ticks(cron: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The ticks of ``cron`` (UTC) in (start, end]: brute force over the minutes."""
    minute, hour, dom, month, dow = cron.split()

    def match(field: str, value: int) -> bool:
        if field == "*":
            return True
        if field.startswith("*/"):
            return value % int(field[2:]) == 0
        return value in {int(v) for v in field.split(",")}

    ticks, t = [], start.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    while t <= end:
        if match(minute, t.minute) and match(hour, t.hour) and match(dom, t.day) and match(month, t.month) \
                and match(dow, t.isoweekday() % 7):
            ticks.append(t)
        t += dt.timedelta(minutes=1)
    return ticks


class Hour:
    """The daemon's part, in-process: ticks, their run requests, and what happened."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch):
        from analytics_platform.ops import freshness

        self.defs, self.instance, self.monkeypatch, self.freshness = defs, instance, monkeypatch, freshness
        self.cursors: dict[str, str | None] = {}
        self.runs: list[tuple[str, str, bool]] = []  # (origin, job, success)
        self.skips: list[tuple[str, str]] = []  # (origin, reason)
        self.failures: list[str] = []

    @contextlib.contextmanager
    def at(self, when: dt.datetime):
        with freeze_time(when):  # Dagster's clock (ticks, checks' evaluation times)
            self.monkeypatch.setattr(self.freshness, "now", lambda: when)
            # the platform's clock: every module's `utc_now` (imported by name from common)
            for name, module in list(sys.modules.items()):
                if name.startswith("analytics_platform.") and callable(getattr(module, "utc_now", None)):
                    self.monkeypatch.setattr(module, "utc_now", lambda: when)
            yield

    def _execute(self, origin: str, request: dg.RunRequest, job_name: str | None) -> None:
        if request.asset_check_keys and not job_name:
            # dg.materialize builds a Definitions, whose load context reads the context's defs
            # state storage; the one left by an earlier (disposed) instance is not ours.
            with set_defs_state_storage(None):
                result = self._materialize_checks(request)
            name = "freshness checks"
        else:
            job = self.defs.resolve_job_def(request.job_name or job_name)
            result = job.execute_in_process(
                run_config=request.run_config, tags=request.tags, partition_key=request.partition_key,
                instance=self.instance, raise_on_error=False,
            )
            name = job.name
        self._record(origin, name, result)

    def _materialize_checks(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            assets=[*self.defs.assets, *(self.defs.asset_checks or [])],
            selection=dg.AssetSelection.checks(*request.asset_check_keys),
            resources=self.defs.resources, instance=self.instance, tags=request.tags, raise_on_error=False,
        )

    def _record(self, origin: str, name: str, result: dg.ExecuteInProcessResult) -> None:
        self.runs.append((origin, name, result.success))
        if not result.success:
            errors = [e.message for e in result.all_events if e.is_failure][:3]
            self.failures.append(f"{origin} -> {name}: {errors}")

    def schedule_tick(self, schedule: dg.ScheduleDefinition, tick: dt.datetime) -> None:
        with self.at(tick):
            context = dg.build_schedule_context(
                instance=self.instance, scheduled_execution_time=tick, repository_def=self.defs.get_repository_def()
            )
            result = schedule.evaluate_tick(context)
            origin = f"{schedule.name}@{tick:%H:%M}"
            if not result.run_requests:
                self.skips.append((origin, result.skip_message or ""))
            for request in result.run_requests or []:
                self._execute(origin, request, schedule.job_name)

    def sensor_tick(self, sensor: dg.SensorDefinition, when: dt.datetime) -> None:
        with self.at(when):
            context = dg.build_sensor_context(
                instance=self.instance, cursor=self.cursors.get(sensor.name), definitions=self.defs,
                resources=self.defs.resources, sensor_name=sensor.name,
            )
            result = sensor.evaluate_tick(context)
            self.cursors[sensor.name] = result.cursor
            origin = f"{sensor.name}@{when:%H:%M}"
            for reaction in getattr(result, "dagster_run_reactions", None) or []:
                if reaction.error is not None:
                    self.failures.append(f"{origin}: {reaction.error.to_string()[:300]}")
            if not result.run_requests:
                self.skips.append((origin, result.skip_message or ""))
            for request in result.run_requests or []:
                job_name = sensor.job_name if sensor.has_jobs and not request.asset_check_keys else None
                self._execute(origin, request, job_name)


def test_the_first_hour_after_the_demo_has_no_failed_run_and_no_alert(app_db_url, tmp_path, monkeypatch, capfd):
    data_dir, home = tmp_path / "data", tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "dagster.yaml", home / "dagster.yaml")  # as `make` does
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("APP_DATABASE_URL", app_db_url)  # the test server instead of the embedded one
    monkeypatch.delenv("EVENTS_CONFIG", raising=False)  # the repository's config/events_config.json
    monkeypatch.setenv("EVENTS_CONFIG_PATH", str(Path(__file__).resolve().parents[2] / "config" / "events_config.json"))
    monkeypatch.delitem(sys.modules, "analytics_platform.definitions", raising=False)
    from analytics_platform.demo.runner import run_demo

    assert run_demo() == 0  # `make demo`
    capfd.readouterr()
    from analytics_platform.definitions import defs

    outboxes = _outbox_lines(data_dir)
    start = dt.datetime.now(UTC).replace(second=0, microsecond=0)
    end = start + dt.timedelta(hours=1)
    repo = defs.get_repository_def()
    schedules = [s for s in repo.schedule_defs if s.default_status == dg.DefaultScheduleStatus.RUNNING]
    sensors = [s for s in repo.sensor_defs if s.default_status == dg.DefaultSensorStatus.RUNNING]
    assert {s.name for s in sensors} >= {"run_failure_slack_alert", "freshness_checks_sensor", "freshness_slack_alert"}

    with dg.DagsterInstance.get() as instance:
        hour = Hour(defs, instance, monkeypatch)
        events: list[tuple[dt.datetime, int, object]] = []
        for schedule in schedules:
            for tick in _cron_ticks(schedule.cron_schedule, start, end):
                events.append((tick, 0, schedule))
        for sensor in sensors:
            every = max(1, (sensor.minimum_interval_seconds or 30) // 60)
            for k in range(0, 61, every):
                events.append((start + dt.timedelta(minutes=k, seconds=30), 1, sensor))
        # `make dev` may start at any hour: each daily schedule's next tick, with the quarter
        # of an hour of frequent ticks before it (as the daemon would have run them), then the sensors
        frequent = [s for s in schedules if s.cron_schedule.split()[1] == "*"]
        for schedule in schedules:
            if schedule not in frequent:
                tick = _cron_ticks(schedule.cron_schedule, end, end + dt.timedelta(days=1))[0]
                events.append((tick, 0, schedule))
                for other in frequent:
                    for t in _cron_ticks(other.cron_schedule, tick - dt.timedelta(minutes=16), tick):
                        events.append((t, 0, other))
                for sensor in sensors:
                    events.append((tick + dt.timedelta(minutes=1), 1, sensor))
        events = list({(when, order, d.name): (when, order, d) for when, order, d in events}.values())
        for when, _, definition in sorted(events, key=lambda e: (e[0], e[1], e[2].name)):
            if isinstance(definition, dg.ScheduleDefinition):
                hour.schedule_tick(definition, when)
            else:
                hour.sensor_tick(definition, when)

    assert hour.failures == []
    assert all(ok for _, _, ok in hour.runs)
    ran = {origin.split("@")[0] for origin, _, _ in hour.runs}
    assert {"mixpanel_events_every_15_minutes", "mixpanel_event_anomalies_every_5_minutes"} <= ran
    assert all(reason for _, reason in hour.skips), [o for o, r in hour.skips if not r]  # a skip says why
    new = {name: (data_dir / "outbox" / name).read_text().splitlines()[outboxes.get(name, 0):]
           for name in _outbox_lines(data_dir)}
    assert {name: lines for name, lines in new.items() if lines} == {}  # no alert, no profile update
    # the freshness checks ran and, never fresh on this instance, are warnings
    from analytics_platform.ops.freshness import FRESHNESS_CHECK_KEYS, previous_evaluation

    with dg.DagsterInstance.get() as instance:
        for key in FRESHNESS_CHECK_KEYS:
            evaluation = previous_evaluation(instance, key)
            assert evaluation is not None, key
            assert evaluation.passed or evaluation.severity == dg.AssetCheckSeverity.WARN, (key, evaluation.description)
