"""Operations: the run-failure Slack alert, the freshness checks, the sensor that evaluates
them, the sensor that posts freshness episodes, the observation of the external sources (the ``slack`` resource comes from the top
level)."""

import warnings

import dagster as dg

from analytics_platform.ops.freshness import FRESHNESS_CHECKS
from analytics_platform.ops.observations import external_sources_observation
from analytics_platform.ops.sensors import freshness_slack_alert, run_failure_slack_alert

# Dagster's freshness sensor: evaluates a check that never ran, a passed one whose
# ``dagster/fresh_until_timestamp`` is past, and a failed one once its asset was updated.
# (Dagster marks the factory "superseded" by FreshnessPolicy, whose daemon-evaluated states
# cannot express "the current partition" nor "never fresh on this instance": see
# docs/operations.md.)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.SupersessionWarning)
    freshness_checks_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=FRESHNESS_CHECKS,
        name="freshness_checks_sensor",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        tags={"analytics_platform/trigger": "freshness"},
    )

defs = dg.Definitions(
    asset_checks=FRESHNESS_CHECKS,
    sensors=[run_failure_slack_alert, freshness_checks_sensor, freshness_slack_alert, external_sources_observation],
)
