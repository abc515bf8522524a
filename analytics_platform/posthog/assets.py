"""PostHog + Firebase session and person aggregates (thin Dagster wiring).

The aggregation is SQL in the warehouse (``analytics_platform/sql/posthog``), run by
:mod:`analytics_platform.posthog.store`; the pure rules that shape it (carried columns,
run windows, event names) live in :mod:`analytics_platform.posthog.rules`, the checks the
assets evaluate in :mod:`analytics_platform.posthog.checks`.
"""


import dagster as dg
from pydantic import Field

from analytics_platform.common import daily_partitions, partition_keys_of
from analytics_platform.posthog import checks, rules, store
from analytics_platform.posthog.tables import PERSONS_SCHEMA, sessions_schema
from analytics_platform.resources.warehouse import Warehouse, column_schema
from analytics_platform.settings import get_settings

GROUP = "posthog"
OWNERS = ["team:data-platform"]

# Keys follow design.md's [dataset, table] convention with the DEFAULT dataset names; the
# tables actually read/written come from POSTHOG_DATASET_ID, FIREBASE_DATASET_ID and
# POSTHOG_AGGREGATED_DATASET_ID.
POSTHOG_EVENTS_KEY = dg.AssetKey(["posthog_etl", "events"])
POSTHOG_SESSIONS_KEY = dg.AssetKey(["posthog_etl", "sessions"])
FIREBASE_USERS_KEY = dg.AssetKey(["firebase_etl_prod", "users"])
FIREBASE_EVENTS_KEY = dg.AssetKey(["firebase_etl_prod", "events"])
POSTHOG_PERSONS_KEY = dg.AssetKey(["posthog_etl", "persons"])
SESSIONS_KEY = dg.AssetKey(["posthog_aggregated", "sessions"])
PERSONS_KEY = dg.AssetKey(["posthog_aggregated", "persons"])

SESSIONS_PARTITIONS = daily_partitions()

# No two runs of the sessions asset at once (BigQuery DML on the same table conflicts):
# runs of the daily job and its schedule carry this run-queue tag, limited to 1 in
# dagster.yaml / deploy/values.yaml (tag_concurrency_limits); the op is also in this
# concurrency pool (default limit 1), which covers ad-hoc runs and backfills too.
SESSIONS_RUN_TAG = "analytics_platform/posthog_sessions"
SESSIONS_POOL = "posthog_sessions"


def _source(key: dg.AssetKey, description: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=key,
        description=description,
        group_name=GROUP,
        kinds={"bigquery"},
        owners=OWNERS,
        metadata={"dataset_setting": "FIREBASE_DATASET_ID" if key.path[0].startswith("firebase") else "POSTHOG_DATASET_ID"},
    )


SOURCE_SPECS = [
    _source(
        POSTHOG_EVENTS_KEY,
        "PostHog events (BigQuery batch export) in `{POSTHOG_DATASET_ID}.events`: uuid, event, "
        "properties (JSON or STRING holding JSON; `$session_id` inside), distinct_id, timestamp …",
    ),
    _source(
        POSTHOG_SESSIONS_KEY,
        "PostHog sessions export in `{POSTHOG_DATASET_ID}.sessions`; its optional columns "
        "(entry/exit URL, bounce, channel, entry_utm_*) are carried into the session aggregate.",
    ),
    _source(
        POSTHOG_PERSONS_KEY,
        "PostHog persons export in `{POSTHOG_DATASET_ID}.persons` (optional): distinct_id -> "
        "person_id; when present, posthog_aggregated/persons is keyed by person_id.",
    ),
    _source(
        FIREBASE_USERS_KEY,
        "Firebase users in `{FIREBASE_DATASET_ID}.users`: user_id (= PostHog distinct_id), "
        "created_at, platform, country, properties.",
    ),
    _source(
        FIREBASE_EVENTS_KEY,
        "Firebase Analytics export in `{FIREBASE_DATASET_ID}.events`: event_date (YYYYMMDD), "
        "event_timestamp (INT64 µs UTC), event_name, event_params, user_id …",
    ),
]


class SessionsConfig(dg.Config):
    """Run config of ``posthog_aggregated/sessions`` (op ``posthog_aggregated__sessions``)."""

    event_created_event: str = Field(
        default=rules.DEFAULT_EVENT_NAMES["event_created_event"],
        description="PostHog event name counted in events_created_count.",
    )
    quiz_started_event: str = Field(
        default=rules.DEFAULT_EVENT_NAMES["quiz_started_event"],
        description="PostHog event name counted in quiz_started_count.",
    )
    quiz_completed_event: str = Field(
        default=rules.DEFAULT_EVENT_NAMES["quiz_completed_event"],
        description="PostHog event name counted in quiz_completed_count.",
    )
    scroll_event: str = Field(
        default=rules.DEFAULT_EVENT_NAMES["scroll_event"],
        description="PostHog event name of scroll events (scroll_event_count, max_scroll_depth).",
    )
    max_session_days: int = Field(
        default=rules.DEFAULT_MAX_SESSION_DAYS,
        ge=0,
        le=7,
        description=(
            "How many days after its start day a session's events are still read. PostHog "
            "ends a session after 30 min of inactivity and at 24 h, so 1 is enough."
        ),
    )


@dg.asset(
    key=SESSIONS_KEY,
    partitions_def=SESSIONS_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[POSTHOG_EVENTS_KEY, POSTHOG_SESSIONS_KEY, FIREBASE_USERS_KEY, FIREBASE_EVENTS_KEY],
    group_name=GROUP,
    kinds={"bigquery", "sql"},
    owners=OWNERS,
    tags={"domain": "posthog"},
    # the columns every run writes (columns carried from the sessions export come on top)
    metadata={"dagster/column_schema": column_schema(sessions_schema(rules.plan_carry([])))},
    check_specs=checks.sessions_check_specs(SESSIONS_KEY),
    pool=SESSIONS_POOL,
)
def sessions(
    context: dg.AssetExecutionContext, config: SessionsConfig, warehouse: Warehouse
) -> dg.MaterializeResult:
    """One row per PostHog session, by the UTC date of the session's first event.

    Reads ``{POSTHOG_DATASET_ID}.events`` (and its ``sessions`` export for the optional
    entry/exit URL, bounce, channel and UTM columns), ``{FIREBASE_DATASET_ID}.users`` and
    ``{FIREBASE_DATASET_ID}.events``; writes ``{POSTHOG_AGGREGATED_DATASET_ID}.sessions``.
    Everything is computed in the warehouse by one MERGE per run (sql/posthog/sessions_merge.sql)
    that deletes the rows of the run's days and inserts the new ones atomically.

    A run covers one day or a range of days (a backfill is ONE run). Events are read from
    ``max_session_days`` before the first day to as many days after the last, so a session
    that starts at 23:59 and ends after midnight is complete and belongs to its start day only.

    Re-run safety: each run replaces exactly its days' rows as a unit, from the source tables
    alone, so re-running a day (or the daily run's 3-day late window) gives the same rows
    without duplicates; a late event changes its session at the next run covering its day.
    """
    settings = get_settings()
    keys = partition_keys_of(context)
    if not keys:
        raise dg.Failure("posthog_aggregated/sessions is partitioned by day: pick a partition or a range.")
    try:
        names = rules.validate_event_names(config.model_dump())
    except ValueError as exc:
        raise dg.Failure(str(exc)) from None
    result = store.rebuild_sessions(warehouse, settings, keys, names, config.max_session_days, log=context.log)
    for key in keys:
        context.add_asset_metadata(result.partition_metadata(key), partition_key=key)
    if result.events_without_session_id:
        context.log.info(f"{result.events_without_session_id} events without $session_id were not loaded.")
    return dg.MaterializeResult(metadata=result.metadata(), check_results=checks.sessions_check_results(result))


@dg.asset(
    key=PERSONS_KEY,
    deps=[SESSIONS_KEY, POSTHOG_PERSONS_KEY],
    group_name=GROUP,
    kinds={"bigquery", "sql"},
    owners=OWNERS,
    tags={"domain": "posthog"},
    automation_condition=dg.AutomationCondition.eager(),
    metadata={"dagster/column_schema": column_schema(PERSONS_SCHEMA)},
    check_specs=checks.persons_check_specs(PERSONS_KEY),
)
def persons(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """One row per person, aggregated from the sessions table: PostHog's person_id when
    PostHog's persons export maps the distinct ids (all of a person's distinct ids in one
    row), else one row per distinct_id.

    Reads ``{POSTHOG_AGGREGATED_DATASET_ID}.sessions`` and, when it exists,
    ``{POSTHOG_DATASET_ID}.persons``; writes
    ``{POSTHOG_AGGREGATED_DATASET_ID}.persons`` with one MERGE (sql/posthog/persons_rebuild.sql)
    that replaces the whole table atomically. Runs after sessions in the daily job and, by
    its eager automation condition, after any other sessions update (e.g. a backfill).

    Re-run safety: a full rebuild from sessions in one statement; re-running gives the same
    rows (only ``_loaded_at`` changes) and readers never see a partial table.
    """
    result = store.rebuild_persons(warehouse, get_settings())
    return dg.MaterializeResult(metadata=result.metadata(), check_results=checks.persons_check_results(result))
