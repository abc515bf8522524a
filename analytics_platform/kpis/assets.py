"""``app_db/weekly_kpi``: inactivity detection and P/S recalculation (specs/inactivity_kpi.md).

Thin Dagster wiring over :mod:`analytics_platform.kpis.recalc` (SQL + vectorised models).
The source tables belong to the application and are declared as external ``AssetSpec``s.
"""


import datetime as dt
from typing import Any, Iterator, Optional

import dagster as dg
from pydantic import Field

from analytics_platform.common import parse_as_of
from analytics_platform.kpis import recalc
from analytics_platform.kpis.alerts import format_high_churn
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.resources.slack import SlackResource
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


def build_params(config: WeeklyKpiConfig, settings: Optional[Settings] = None) -> recalc.RecalcParams:
    """Run config + environment defaults -> validated parameters (dg.Failure if invalid)."""
    s = settings or get_settings()

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    try:
        return recalc.RecalcParams(
            as_of=parse_as_of(config.as_of),
            threshold_days=int(pick(config.threshold_days, s.inactivity_threshold_days)),
            lookback_days=int(pick(config.lookback_days, s.kpi_lookback_days)),
            use_bayesian=bool(pick(config.use_bayesian, s.metrics_use_bayesian)),
            default_target=float(pick(config.default_target, s.metrics_default_target)),
            churn_horizon_days=float(pick(config.churn_horizon_days, s.metrics_churn_horizon_days)),
            dry_run=bool(config.dry_run),
        )
    except recalc.RecalcConfigError as exc:
        raise dg.Failure(f"Invalid run config for {WEEKLY_KPI_OP}: {exc}") from None


def _metadata(result: recalc.RecalcResult) -> dict[str, Any]:
    p = result.params
    sample = result.sample()
    failures = [{"user_id": u, "reason": r} for u, r in result.failures[:50]]
    high = result.high_churn()
    meta: dict[str, Any] = {
        "dagster/row_count": result.inserted + result.updated if result.written else 0,
        "dry_run": p.dry_run,
        "as_of": p.as_of.isoformat(),
        "week_start": p.week_start.isoformat(),
        "threshold_days": p.threshold_days,
        "lookback_days": p.lookback_days,
        "use_bayesian": p.use_bayesian,
        "default_target": p.default_target,
        "churn_horizon_days": p.churn_horizon_days,
        "inactive_users": result.inactive,
        "processed": result.processed,
        "failed": result.failed,
        "no_scores_s_only": result.no_scores,
        ("would_insert" if p.dry_run else "inserted"): result.inserted,
        ("would_update" if p.dry_run else "updated"): result.updated,
        "high_churn_users": len(high),
        "session_table_present": result.session_table,
        "duration_ms": result.duration_ms,
        "summary": result.summary_line if result.inactive else (
            f"No inactive users found (threshold={p.threshold_days} days)"
        ),
        "sample_changes": dg.MetadataValue.json(sample),
        "sample_changes_table": dg.MetadataValue.md(_sample_markdown(sample)),
        "failed_users": dg.MetadataValue.json(failures),
    }
    if result.written_at is not None:
        meta["write_watermark"] = result.written_at.isoformat()
    if result.created_weekly_kpi:
        meta["created_weekly_kpi_table"] = True
    return meta


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _sample_markdown(sample: list[dict]) -> str:
    if not sample:
        return "No changes."
    lines = ["| user | days inactive | n | P old → new | S old → new |", "|---|---|---|---|---|"]
    for r in sample:
        lines.append(
            f"| {r['user_id']} | {r['days_inactive']:.2f} | {r['n_scores']} | "
            f"{_fmt(r['P_old'])} → {_fmt(r['P_new'])} | {_fmt(r['S_old'])} → {_fmt(r['S_new'])} |"
        )
    return "\n".join(lines)


def send_high_churn_summary(
    context: dg.AssetExecutionContext,
    result: recalc.RecalcResult,
    app_db: AppDatabase,
    slack: SlackResource,
    settings: Settings,
) -> str:
    """One Slack message for the users whose new S > 0.7; once per (week, as_of, users)."""
    key = recalc.high_churn_alert_key(result)
    if key is None:
        return "none"
    engine = app_db.get_engine()
    if recalc.alert_already_sent(engine, key):
        recalc.mark_alert(engine, result.run_id, key, sent=False)
        context.log.info("High-churn summary for this as_of and these users was already sent; not repeated")
        return "already_sent"
    high = result.high_churn()
    text, blocks = format_high_churn(
        high,
        week_start=result.week_start.isoformat(),
        as_of=result.params.as_of.isoformat(),
        threshold=recalc.HIGH_CHURN_THRESHOLD,
        run_url=f"{settings.dagster_webserver_url}/runs/{context.run.run_id}",
    )
    delivery = slack.post_message(text, blocks=blocks)
    recalc.mark_alert(engine, result.run_id, key, sent=delivery.delivered)
    if not delivery.delivered:
        context.log.warning(
            f"High-churn summary not delivered ({delivery.error}); a re-run with the same as_of retries it"
        )
        return "not_delivered"
    context.log.info(f"High-churn summary ({len(high)} users) sent to {delivery.destination}")
    return "sent"


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
    slack: SlackResource,
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
    try:
        result = recalc.recalculate(
            app_db.get_engine(), params, run_id=context.run.run_id, log=context.log
        )
    except recalc.MissingSourceTables as exc:
        raise dg.Failure(str(exc)) from None
    metadata = _metadata(result)
    if params.dry_run:
        context.log.info("dry_run: nothing written; the would-be changes are in the observation metadata")
        context.log_event(dg.AssetObservation(asset_key=WEEKLY_KPI_KEY, metadata=metadata))
        return
    metadata["high_churn_alert"] = send_high_churn_summary(context, result, app_db, slack, settings)
    yield dg.MaterializeResult(metadata=metadata)


def run_config(**fields: Any) -> dict:
    """Run config for ``app_db/weekly_kpi`` with the given fields (helper for jobs and tests)."""
    return {"ops": {WEEKLY_KPI_OP: {"config": {k: v for k, v in fields.items() if v is not None}}}}


def as_of_iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat()


