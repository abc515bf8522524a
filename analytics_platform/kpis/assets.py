"""``app_db/weekly_kpi``: inactivity detection and P/S recalculation (specs/inactivity_kpi.md).

Thin Dagster wiring: run config -> :class:`rules.RecalcParams` -> :func:`store.recalculate`
(SQL + the vectorised models of ``rules.py``) -> metadata.  The source tables belong to the
application and are declared as external ``AssetSpec``s.
"""


import datetime as dt
from typing import Any, Iterator, Optional

import dagster as dg
from pydantic import Field

from analytics_platform.common import UTC, parse_as_of
from analytics_platform.kpis import rules, store
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.resources.slack import SlackService
from analytics_platform.settings import Settings, get_settings

GROUP = "kpis"
OWNERS = ["team:data-platform"]
WEEKLY_KPI_KEY = dg.AssetKey(["app_db", "weekly_kpi"])
WEEKLY_KPI_OP = "app_db__weekly_kpi"

_SOURCES = {
    "exam_results": "Exam results (user_id, score 0-100, created_at, updated_at): activity and P's scores.",
    "features_topic_daily": "Per-topic daily features (user_id, last_seen_at): activity.",
    "attempt": "VIEW of attempts (student_id, completed_at): activity.",
    "session": "Sessions (user_id, ended_at): activity. Optional: the job works without it.",
    "interest_goal": "Learners' goals (user_id, target_score 0-100): P's target (highest wins).",
}
SOURCE_SPECS = [
    dg.AssetSpec(
        key=["app_db", name],
        description=f"External application table owned by the app: {text}",
        group_name=GROUP,
        kinds={"postgres"},
        owners=OWNERS,
    )
    for name, text in _SOURCES.items()
]


class WeeklyKpiConfig(dg.Config):
    """Run config of ``app_db/weekly_kpi``.  Unset fields take the environment's value at run
    time (so a changed INACTIVITY_THRESHOLD_DAYS applies without reloading the code)."""

    as_of: Optional[str] = Field(
        default=None, description="ISO-8601 UTC instant the run is evaluated at; default: now."
    )
    threshold_days: Optional[int] = Field(
        default=None,
        description="Inactive = no activity for at least this many days (old --threshold). "
        "Default INACTIVITY_THRESHOLD_DAYS (7).",
    )
    lookback_days: Optional[int] = Field(
        default=None,
        description="Only users active within this many days are considered; also the score "
        "window. Default KPI_LOOKBACK_DAYS (30).",
    )
    use_bayesian: Optional[bool] = Field(
        default=None, description="Beta-binomial model for P instead of the normal one. "
        "Default METRICS_USE_BAYESIAN (false).",
    )
    default_target: Optional[float] = Field(
        default=None, description="Target score (0-100) for users without an interest_goal. "
        "Default METRICS_DEFAULT_TARGET (0.0).",
    )
    churn_horizon_days: Optional[float] = Field(
        default=None, description="Horizon of the churn-risk curve S. Default METRICS_CHURN_HORIZON_DAYS (14).",
    )
    dry_run: bool = Field(
        default=False, description="Compute and report (old -> new sample) but write nothing (old --dry-run)."
    )


def build_params(config: WeeklyKpiConfig, settings: Optional[Settings] = None) -> rules.RecalcParams:
    """Run config + environment defaults -> validated parameters (dg.Failure if invalid)."""
    s = settings or get_settings()

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    try:
        return rules.RecalcParams(
            as_of=parse_as_of(config.as_of),
            threshold_days=int(pick(config.threshold_days, s.inactivity_threshold_days)),
            lookback_days=int(pick(config.lookback_days, s.kpi_lookback_days)),
            use_bayesian=bool(pick(config.use_bayesian, s.metrics_use_bayesian)),
            default_target=float(pick(config.default_target, s.metrics_default_target)),
            churn_horizon_days=float(pick(config.churn_horizon_days, s.metrics_churn_horizon_days)),
            dry_run=bool(config.dry_run),
        )
    except rules.RecalcConfigError as exc:
        raise dg.Failure(f"Invalid run config for {WEEKLY_KPI_OP}: {exc}") from None


@dg.asset(
    key=WEEKLY_KPI_KEY,
    deps=[spec.key for spec in SOURCE_SPECS],
    group_name=GROUP,
    kinds={"postgres", "python"},
    owners=OWNERS,
    output_required=False,
    tags={"domain": "kpis"},
)
def weekly_kpi(
    context: dg.AssetExecutionContext,
    config: WeeklyKpiConfig,
    app_db: AppDatabase,
    slack: SlackService,
) -> Iterator[dg.MaterializeResult]:
    """P (goal attainment) and S (churn risk) of inactive learners in ``weekly_kpi``.

    Reads ``exam_results``, ``features_topic_daily``, ``attempt``, ``session`` (when it
    exists), ``interest_goal`` and ``weekly_kpi`` in the application PostgreSQL.  Writes the
    ``P``/``S`` keys of ``kpis`` in each inactive user's row for the week of ``as_of``
    (Monday, UTC), inserting the row when missing, plus one bookkeeping row in
    ``weekly_kpi_recalc_runs``; one transaction.  Users with an invalid score are reported
    and skipped; users without scores get only S.  A re-run is safe: for the same ``as_of``
    it computes the same values and the merge only replaces ``P`` and ``S`` (``kpis || patch``
    in the database, so every other key, including ones written concurrently, is kept);
    the high-churn Slack summary is sent once per as_of and user set.  ``dry_run`` writes
    nothing and reports an asset observation (not a materialization) with the sample of
    old -> new values.
    """
    settings = get_settings()
    params = build_params(config, settings)
    engine = app_db.get_engine()
    try:
        result = store.recalculate(engine, params, run_id=context.run.run_id, log=context.log)
    except store.MissingSourceTables as exc:
        raise dg.Failure(str(exc)) from None
    if params.dry_run:
        context.log.info("dry_run: nothing written; the would-be changes are in the observation metadata")
        context.log_event(dg.AssetObservation(asset_key=WEEKLY_KPI_KEY, metadata=result.metadata()))
        return
    run_url = f"{settings.dagster_webserver_url}/runs/{context.run.run_id}"
    alert = store.send_high_churn_summary(engine, result, slack, run_url, context.log)
    yield dg.MaterializeResult(metadata={**result.metadata(), "high_churn_alert": alert})


def run_config(**fields: Any) -> dict:
    """Run config for ``app_db/weekly_kpi`` with the given fields (helper for jobs and tests)."""
    return {"ops": {WEEKLY_KPI_OP: {"config": {k: v for k, v in fields.items() if v is not None}}}}


def as_of_iso(value: dt.datetime) -> str:
    return value.astimezone(UTC).isoformat()


