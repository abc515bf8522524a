"""PostHog + Firebase session and person aggregates (thin Dagster wiring).

The aggregation is SQL in the warehouse (``analytics_platform/sql/posthog``); the pure
logic that shapes it lives in :mod:`analytics_platform.posthog.sessions_sql`.
"""


from typing import Any

import dagster as dg
from pydantic import Field

from analytics_platform.common import contiguous_day_ranges, daily_partitions, partition_keys_of, utc_now
from analytics_platform.posthog import sessions_sql as logic
from analytics_platform.posthog.tables import (
    EVENTS_TABLE,
    PERSONS_SCHEMA,
    PERSONS_TABLE,
    SESSIONS_TABLE,
    USERS_TABLE,
    sessions_schema,
)
from analytics_platform.resources.warehouse import Warehouse
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
SESSIONS_KEY = dg.AssetKey(["posthog_aggregated", "sessions"])
PERSONS_KEY = dg.AssetKey(["posthog_aggregated", "persons"])

SESSIONS_PARTITIONS = daily_partitions()


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
        default=logic.DEFAULT_EVENT_NAMES["event_created_event"],
        description="PostHog event name counted in events_created_count.",
    )
    quiz_started_event: str = Field(
        default=logic.DEFAULT_EVENT_NAMES["quiz_started_event"],
        description="PostHog event name counted in quiz_started_count.",
    )
    quiz_completed_event: str = Field(
        default=logic.DEFAULT_EVENT_NAMES["quiz_completed_event"],
        description="PostHog event name counted in quiz_completed_count.",
    )
    scroll_event: str = Field(
        default=logic.DEFAULT_EVENT_NAMES["scroll_event"],
        description="PostHog event name of scroll events (scroll_event_count, max_scroll_depth).",
    )
    max_session_days: int = Field(
        default=logic.DEFAULT_MAX_SESSION_DAYS,
        ge=0,
        le=7,
        description=(
            "How many days after its start day a session's events are still read. PostHog "
            "ends a session after 30 min of inactivity and at 24 h, so 1 is enough."
        ),
    )


def _int(value: Any) -> int:
    """A count from a query row: None/NaN/NA (an empty aggregate) -> 0."""
    try:
        if value is None or value != value:  # NaN
            return 0
        return int(value)
    except (TypeError, ValueError):
        return 0


CHECK_UNIQUE = "unique_session_id_per_partition"
CHECK_ORDER = "session_end_not_before_start"
CHECK_NON_NEGATIVE = "non_negative_counts"


def _require_sources(warehouse: Warehouse, settings) -> None:
    needed = [
        (settings.posthog_dataset_id, EVENTS_TABLE, "POSTHOG_DATASET_ID"),
        (settings.firebase_dataset_id, USERS_TABLE, "FIREBASE_DATASET_ID"),
        (settings.firebase_dataset_id, EVENTS_TABLE, "FIREBASE_DATASET_ID"),
    ]
    missing = [(d, t, var) for d, t, var in needed if not warehouse.table_exists(d, t)]
    if missing:
        names = ", ".join(f"{d}.{t} (dataset from {var})" for d, t, var in missing)
        raise dg.Failure(
            f"Source table(s) not found in the {warehouse.engine} warehouse: {names}. "
            "Check the dataset settings, or run the demo seed locally "
            "(python -m analytics_platform.demo --domain posthog --seed-only)."
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
    check_specs=[
        dg.AssetCheckSpec(CHECK_UNIQUE, asset=SESSIONS_KEY, description="Each session_id appears once per session_date partition and is never NULL."),
        dg.AssetCheckSpec(CHECK_ORDER, asset=SESSIONS_KEY, description="session_end >= session_start (both set) on every row."),
        dg.AssetCheckSpec(CHECK_NON_NEGATIVE, asset=SESSIONS_KEY, description="Counts and duration are >= 0; max_scroll_depth within [0, 1]."),
    ],
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
        names = logic.validate_event_names(config.model_dump())
    except ValueError as exc:
        raise dg.Failure(str(exc)) from None
    _require_sources(warehouse, settings)

    ph, fb, out = (
        settings.posthog_dataset_id,
        settings.firebase_dataset_id,
        settings.posthog_aggregated_dataset_id,
    )
    export_columns = warehouse.table_columns(ph, "sessions")
    plan = logic.plan_carry(export_columns)
    if not plan.export_exists:
        context.log.warning(
            f"{ph}.sessions (PostHog sessions export) not found: its optional columns are NULL."
        )
    warehouse.ensure_table(
        out, SESSIONS_TABLE, sessions_schema(plan), partition_by="session_date", cluster_by=["distinct_id"]
    )
    sql = logic.build_sessions_merge_sql(plan, posthog_dataset=ph, firebase_dataset=fb, out_dataset=out)

    loaded_at = utc_now()
    affected = 0
    events_by_day: dict[str, dict[str, Any]] = {}
    stats_rows: list[dict[str, Any]] = []
    for first, last in contiguous_day_ranges(keys):
        window = logic.RunWindow(first, last, config.max_session_days)
        context.log.info(
            f"Rebuilding {out}.{SESSIONS_TABLE} for {first}..{last} from events "
            f"[{window.read_start.isoformat()}, {window.read_end.isoformat()})"
        )
        affected += warehouse.execute(sql, window.params(names, loaded_at))
        ev = warehouse.run_file(
            "posthog/sessions_event_stats",
            {"range_start": window.range_start, "range_end": window.range_end},
            posthog_dataset=ph,
        )
        events_by_day.update({str(r["day"])[:10]: r for r in ev.to_dict("records")})
        st = warehouse.run_file(
            "posthog/sessions_partition_stats", {"first_day": first, "last_day": last}, out_dataset=out
        )
        stats_rows.extend(st.to_dict("records"))

    stats_by_day = {str(r["session_date"])[:10]: r for r in stats_rows}

    def total(col: str) -> int:
        return sum(_int(r.get(col)) for r in stats_rows)

    # per-partition metadata: each day of a range run gets its own counts
    for key in keys:
        st, ev = stats_by_day.get(key, {}), events_by_day.get(key, {})
        context.add_asset_metadata(
            {
                "dagster/row_count": _int(st.get("session_count")),
                "events_in_day": _int(ev.get("events_in_day")),
                "events_without_session_id": _int(ev.get("events_without_session_id")),
                "events_aggregated": _int(st.get("events_aggregated")),
                "sessions_without_firebase_user": _int(st.get("without_firebase_user")),
                "sessions_spanning_midnight": _int(st.get("spanning_midnight")),
            },
            partition_key=key,
        )

    row_count = total("session_count")
    events_without_session = sum(_int(r.get("events_without_session_id")) for r in events_by_day.values())
    dup, null_ids = total("duplicate_session_ids"), total("null_session_ids")
    bad_order, negative = total("end_before_start"), total("negative_counts")
    offending = lambda col: sorted(str(r["session_date"])[:10] for r in stats_rows if _int(r.get(col)) > 0)  # noqa: E731

    if events_without_session:
        context.log.info(f"{events_without_session} events without $session_id were not loaded.")
    return dg.MaterializeResult(
        metadata={
            "run_days": dg.MetadataValue.json([min(keys), max(keys)]),
            "run_sessions_total": row_count,
            "run_events_without_session_id_total": events_without_session,
            "rows_affected": affected,
            "carried_columns": dg.MetadataValue.json(list(plan.present_names)),
            "missing_optional_columns": dg.MetadataValue.json(list(plan.missing)),
            "ignored_export_columns": dg.MetadataValue.json(list(plan.ignored)),
            "event_names": dg.MetadataValue.json(names),
            "table": f"{out}.{SESSIONS_TABLE}",
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=CHECK_UNIQUE,
                passed=dup == 0 and null_ids == 0,
                metadata={"duplicate_session_ids": dup, "null_session_ids": null_ids,
                          "days_failing": dg.MetadataValue.json(offending("duplicate_session_ids"))},
            ),
            dg.AssetCheckResult(
                check_name=CHECK_ORDER,
                passed=bad_order == 0,
                metadata={"rows_failing": bad_order,
                          "days_failing": dg.MetadataValue.json(offending("end_before_start"))},
            ),
            dg.AssetCheckResult(
                check_name=CHECK_NON_NEGATIVE,
                passed=negative == 0,
                metadata={"rows_failing": negative,
                          "days_failing": dg.MetadataValue.json(offending("negative_counts"))},
            ),
        ],
    )


PERSON_CHECK_UNIQUE = "unique_distinct_id"
PERSON_CHECK_NON_NEGATIVE = "non_negative_counts"


@dg.asset(
    key=PERSONS_KEY,
    deps=[SESSIONS_KEY],
    group_name=GROUP,
    kinds={"bigquery", "sql"},
    owners=OWNERS,
    tags={"domain": "posthog"},
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[
        dg.AssetCheckSpec(PERSON_CHECK_UNIQUE, asset=PERSONS_KEY, description="One row per distinct_id, never NULL."),
        dg.AssetCheckSpec(PERSON_CHECK_NON_NEGATIVE, asset=PERSONS_KEY, description="Counts and durations >= 0; last_session_at >= first_session_at."),
    ],
)
def persons(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """One row per PostHog distinct_id, aggregated from the sessions table only.

    Reads ``{POSTHOG_AGGREGATED_DATASET_ID}.sessions``; writes
    ``{POSTHOG_AGGREGATED_DATASET_ID}.persons`` with one MERGE (sql/posthog/persons_rebuild.sql)
    that replaces the whole table atomically. Runs after sessions in the daily job and, by
    its eager automation condition, after any other sessions update (e.g. a backfill).

    Re-run safety: a full rebuild from sessions in one statement; re-running gives the same
    rows (only ``_loaded_at`` changes) and readers never see a partial table.
    """
    settings = get_settings()
    out = settings.posthog_aggregated_dataset_id
    # persons reads sessions: make sure it exists (empty) even before the first sessions run
    warehouse.ensure_table(
        out, SESSIONS_TABLE, sessions_schema(logic.plan_carry([])), partition_by="session_date", cluster_by=["distinct_id"]
    )
    warehouse.ensure_table(out, PERSONS_TABLE, PERSONS_SCHEMA, cluster_by=["distinct_id"])
    affected = warehouse.execute_file("posthog/persons_rebuild", {"loaded_at": utc_now()}, out_dataset=out)
    st = warehouse.run_file("posthog/persons_stats", out_dataset=out).to_dict("records")[0]
    n = lambda col: _int(st.get(col))  # noqa: E731
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n("person_count"),
            "persons_with_firebase_user": n("with_firebase_user"),
            "sessions_counted": n("sessions_counted"),
            "rows_affected": affected,
            "table": f"{out}.{PERSONS_TABLE}",
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=PERSON_CHECK_UNIQUE,
                passed=n("duplicate_distinct_ids") == 0 and n("null_distinct_ids") == 0,
                metadata={"duplicate_distinct_ids": n("duplicate_distinct_ids"), "null_distinct_ids": n("null_distinct_ids")},
            ),
            dg.AssetCheckResult(
                check_name=PERSON_CHECK_NON_NEGATIVE,
                passed=n("negative_counts") == 0 and n("last_before_first") == 0,
                metadata={"rows_failing": n("negative_counts"), "last_before_first": n("last_before_first")},
            ),
        ],
    )

