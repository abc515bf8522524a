"""Freshness that can fail: one ``freshness`` asset check per watched asset, evaluated on
its own sensor (not only inside the run that just refreshed the asset).

What "fresh" means (docs/operations.md, "Freshness"):

* ``mixpanel_data/mixpanel_events``: the current UTC day's partition was refreshed within
  the last 45 minutes (three 15-minute refreshes).  In the day's first 45 minutes a refresh
  of the previous day's partition counts too (the midnight refresh re-reads it).
* ``posthog_aggregated/sessions``, ``app_db/user_engagement_signals``,
  ``app_db/user_milestones``: yesterday's partition is materialized by 06:00 UTC.
* ``app_db/weekly_kpi`` (daily): materialized since 06:00 UTC the day before the latest
  06:00 UTC deadline.

The checks follow Dagster's freshness-check conventions, so Dagster's freshness sensor
(``build_sensor_for_freshness_checks``) decides when to evaluate them: a check that passed
is evaluated again once ``dagster/fresh_until_timestamp`` is past, a failed one once the
asset has been updated (the asset's own job runs its checks, too).

An asset that has never been fresh on this instance (e.g. ``make dev`` on the 2024 demo
data) fails with severity WARN and the description "never fresh on this instance"; once it
has been fresh, a failure is an ERROR, and ``ops.sensors.freshness_slack_alert`` posts one
message per such episode.  Whether the asset has been fresh is carried from one evaluation
to the next in the check's own metadata (``analytics_platform/has_been_fresh``).
"""


import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from analytics_platform.common import UTC, day_start, utc_now
from analytics_platform.engagement.assets import MILESTONES_KEY, SIGNALS_KEY
from analytics_platform.kpis.assets import WEEKLY_KPI_KEY
from analytics_platform.mixpanel.assets import EVENTS_KEY
from analytics_platform.posthog.assets import SESSIONS_KEY

CHECK_NAME = "freshness"
CURRENT_DAY_MAX_AGE = dt.timedelta(minutes=45)
DEADLINE_HOUR_UTC = 6
NEVER_FRESH = "never fresh on this instance"

# Dagster's freshness-check metadata keys (read by Dagster's freshness sensor and the UI).
FRESH_UNTIL_KEY = "dagster/fresh_until_timestamp"
LAST_UPDATED_KEY = "dagster/last_updated_timestamp"
OVERDUE_SECONDS_KEY = "dagster/overdue_seconds"
# Ours: the asset has passed this check on this instance at least once.
HAS_BEEN_FRESH_KEY = "analytics_platform/has_been_fresh"


def now() -> dt.datetime:
    """The checks' clock (the one seam the time-travelled tests move)."""
    return utc_now()


# ----------------------------------------------------------------------------- pure rules
@dataclass(frozen=True)
class Verdict:
    """One evaluation: passed, what was expected, the last update, and when it can be
    overdue again (passed) or since when it is overdue (failed)."""

    passed: bool
    expected: str
    last_updated: dt.datetime | None
    fresh_until: dt.datetime | None = None
    overdue_since: dt.datetime | None = None


def latest_deadline(at: dt.datetime, hour: int = DEADLINE_HOUR_UTC) -> dt.datetime:
    """The latest daily ``hour``:00 UTC at or before ``at``."""
    today = day_start(at.astimezone(UTC).date()) + dt.timedelta(hours=hour)
    return today if at >= today else today - dt.timedelta(days=1)


def current_day_verdict(
    at: dt.datetime,
    refreshed_at: Callable[[dt.date], dt.datetime | None],
    max_age: dt.timedelta = CURRENT_DAY_MAX_AGE,
) -> Verdict:
    """The current UTC day's partition refreshed within ``max_age`` (in the day's first
    ``max_age``, a refresh of the previous day's partition counts too)."""
    today = at.astimezone(UTC).date()
    midnight = day_start(today)
    last = refreshed_at(today)
    if last is None and at - midnight < max_age:
        last = refreshed_at(today - dt.timedelta(days=1))
    expected = f"partition {today} refreshed within {int(max_age.total_seconds() // 60)} minutes"
    if last is not None and at - last <= max_age:
        return Verdict(True, expected, last, fresh_until=last + max_age)
    return Verdict(False, expected, last, overdue_since=(last + max_age) if last else midnight + max_age)


def daily_partition_verdict(
    at: dt.datetime,
    materialized_at: Callable[[dt.date], dt.datetime | None],
    hour: int = DEADLINE_HOUR_UTC,
) -> Verdict:
    """Yesterday's partition materialized by ``hour``:00 UTC (before that hour, the day
    before yesterday's)."""
    deadline = latest_deadline(at, hour)
    partition = deadline.date() - dt.timedelta(days=1)
    last = materialized_at(partition)
    expected = f"partition {partition} materialized by {deadline:%Y-%m-%d %H:%M} UTC"
    if last is not None:
        return Verdict(True, expected, last, fresh_until=deadline + dt.timedelta(days=1))
    return Verdict(False, expected, None, overdue_since=deadline)


def daily_update_verdict(
    at: dt.datetime, last: dt.datetime | None, hour: int = DEADLINE_HOUR_UTC
) -> Verdict:
    """Materialized within the day before the latest ``hour``:00 UTC deadline."""
    deadline = latest_deadline(at, hour)
    lower = deadline - dt.timedelta(days=1)
    expected = f"materialized since {lower:%Y-%m-%d %H:%M} UTC (daily, deadline {hour:02d}:00 UTC)"
    if last is not None and last >= lower:
        return Verdict(True, expected, last, fresh_until=latest_deadline(last + dt.timedelta(days=1), hour) + dt.timedelta(days=1))
    return Verdict(False, expected, last, overdue_since=deadline)


def describe(verdict: Verdict, has_been_fresh: bool) -> str:
    """The check's description (shown in the UI and in the Slack alert)."""
    last = f"last update {verdict.last_updated:%Y-%m-%d %H:%M} UTC" if verdict.last_updated else "never updated"
    if verdict.passed:
        return f"Fresh: {verdict.expected} ({last})."
    overdue = f", overdue since {verdict.overdue_since:%Y-%m-%d %H:%M} UTC" if verdict.overdue_since else ""
    if not has_been_fresh:
        return f"Not fresh, {NEVER_FRESH} (no alert): expected {verdict.expected} ({last}{overdue})."
    return f"Stale: expected {verdict.expected} ({last}{overdue})."


# ----------------------------------------------------------------------------- instance reads
def _ts(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=UTC)


def partition_materialized_at(instance: dg.DagsterInstance, key: dg.AssetKey) -> Callable[[dt.date], dt.datetime | None]:
    def lookup(day: dt.date) -> dt.datetime | None:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day.isoformat()]), limit=1
        ).records
        return _ts(records[0].timestamp) if records else None

    return lookup


def last_materialized_at(instance: dg.DagsterInstance, key: dg.AssetKey) -> dt.datetime | None:
    records = instance.fetch_materializations(key, limit=1).records
    return _ts(records[0].timestamp) if records else None


def previous_evaluation(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey) -> dg.AssetCheckEvaluation | None:
    """The latest completed evaluation of a check (not the one planned by the current run)."""
    summary = instance.event_log_storage.get_asset_check_summary_records([check_key]).get(check_key)
    record = summary.last_completed_check_execution_record if summary else None
    return record.event.asset_check_evaluation if record and record.event else None


def has_been_fresh(evaluation: dg.AssetCheckEvaluation | None) -> bool:
    if evaluation is None:
        return False
    carried = evaluation.metadata.get(HAS_BEEN_FRESH_KEY)
    return bool(evaluation.passed or (carried is not None and carried.value))


# ----------------------------------------------------------------------------- the checks
@dataclass(frozen=True)
class FreshnessRule:
    asset_key: dg.AssetKey
    description: str
    evaluate: Callable[[dt.datetime, dg.DagsterInstance, dg.AssetKey], Verdict]


RULES = (
    FreshnessRule(
        EVENTS_KEY,
        "The current UTC day's partition was refreshed within the last 45 minutes.",
        lambda at, inst, key: current_day_verdict(at, partition_materialized_at(inst, key)),
    ),
    *(
        FreshnessRule(
            key,
            "Yesterday's partition is materialized by 06:00 UTC.",
            lambda at, inst, key: daily_partition_verdict(at, partition_materialized_at(inst, key)),
        )
        for key in (SESSIONS_KEY, SIGNALS_KEY, MILESTONES_KEY)
    ),
    FreshnessRule(
        WEEKLY_KPI_KEY,
        "Materialized daily: since 06:00 UTC the day before the latest 06:00 UTC deadline.",
        lambda at, inst, key: daily_update_verdict(at, last_materialized_at(inst, key)),
    ),
)


def evaluate(rule: FreshnessRule, instance: dg.DagsterInstance, at: dt.datetime) -> dg.AssetCheckResult:
    """The check result of ``rule`` at ``at`` (severity ERROR once the asset has been fresh
    on this instance, WARN before)."""
    verdict = rule.evaluate(at, instance, rule.asset_key)
    fresh_before = has_been_fresh(previous_evaluation(instance, dg.AssetCheckKey(rule.asset_key, CHECK_NAME)))
    been_fresh = verdict.passed or fresh_before
    metadata: dict[str, dg.RawMetadataValue] = {
        HAS_BEEN_FRESH_KEY: been_fresh,
        "expected": verdict.expected,
        "evaluated_at": dg.MetadataValue.timestamp(at),
    }
    if verdict.last_updated is not None:
        metadata[LAST_UPDATED_KEY] = dg.MetadataValue.timestamp(verdict.last_updated)
    if verdict.passed and verdict.fresh_until is not None:
        metadata[FRESH_UNTIL_KEY] = dg.MetadataValue.timestamp(verdict.fresh_until)
    if not verdict.passed and verdict.overdue_since is not None:
        metadata[OVERDUE_SECONDS_KEY] = max(0.0, round((at - verdict.overdue_since).total_seconds(), 1))
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR if been_fresh else dg.AssetCheckSeverity.WARN,
        description=describe(verdict, been_fresh),
        metadata=metadata,
    )


def _build_check(rule: FreshnessRule) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=rule.asset_key, name=CHECK_NAME, description=rule.description)
    def _freshness(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return evaluate(rule, context.instance, now())

    return _freshness


FRESHNESS_CHECKS = [_build_check(rule) for rule in RULES]
FRESHNESS_CHECK_KEYS = [dg.AssetCheckKey(rule.asset_key, CHECK_NAME) for rule in RULES]
