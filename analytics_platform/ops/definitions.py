"""Operations: the run-failure Slack alert (the ``slack`` resource comes from the top level)."""

import dagster as dg

from analytics_platform.ops.sensors import run_failure_slack_alert

defs = dg.Definitions(sensors=[run_failure_slack_alert])
