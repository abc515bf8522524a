"""Assets of the engagement domain (specs/signals.md): incremental Firestore extraction into
the application PostgreSQL, then daily engagement signals and goal milestones.

Thin wiring: validation is in ``extraction.py``, the rules in ``rules.py`` (pure), the SQL
and table I/O in ``store.py`` / ``sql/engagement/postgres``.
"""


import datetime as dt
from typing import Any, Optional

import dagster as dg
from pydantic import Field

from analytics_platform.common import daily_partitions, partition_day, utc_now
from analytics_platform.engagement import rules, store
from analytics_platform.engagement.extraction import split_documents
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.resources.firestore import FirestoreResource

GROUP = "engagement"
OWNERS = ["team:data-platform"]
TAGS = {"domain": "engagement"}

FIRESTORE_EVENTS_KEY = dg.AssetKey(["firestore", "app_usage_events"])
EXTRACTED_EVENTS_KEY = dg.AssetKey(["app_db", "firestore_app_usage_events"])
SIGNALS_KEY = dg.AssetKey(["app_db", "user_engagement_signals"])
MILESTONES_KEY = dg.AssetKey(["app_db", "user_milestones"])
GOAL_TABLE_KEYS = [dg.AssetKey(["app_db", name]) for name in store.GOAL_TABLES]

EXTRACT_OP = "app_db__firestore_app_usage_events"
SIGNALS_OP = "app_db__user_engagement_signals"
MILESTONES_OP = "app_db__user_milestones"

# every asset of this domain is safe to re-run, so transient failures (Firestore, PostgreSQL)
# are retried with exponential backoff and jitter
RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

CHECK_VALID_DOCUMENTS = "documents_valid"
CHECK_ONE_ROW = "one_row_per_user_and_date"
CHECK_MATCHES_SIGNALS = "same_users_as_signals"
CHECK_IMPLY_GOAL = "milestones_imply_goal_setting"

# ------------------------------------------------------------------------------ sources
_GOAL_TABLE_TEXT = {
    "goal_sub_categories": "Goal sub-categories (id, name).",
    "goals": "Goals (id, name, sub_category_id).",
    "user_goals": "Goals each user selected (user_id, goal_id, tier 1 or 2).",
    "apps": "Service apps (id, package_name UNIQUE, name): an event is 'service' when its app_id is a package_name here.",
    "app_goal_sub_categories": "Which goal sub-categories each service app belongs to (app_id -> apps.id, sub_category_id).",
}
SOURCE_SPECS = [
    dg.AssetSpec(
        key=FIRESTORE_EVENTS_KEY,
        description=(
            "Firestore collection `{FIREBASE_ROOT_COLLECTION}/{userId}/{FIREBASE_EVENTS_SUBCOLLECTION}/{eventId}` "
            "(default `app_usage_events/{userId}/events/{eventId}`) written by the mobile apps: "
            "app_id, foreground_time_ms, session_id, timestamp. External: read incrementally by "
            "`app_db/firestore_app_usage_events`."
        ),
        group_name=GROUP,
        kinds={"firestore"},
        owners=OWNERS,
        tags=TAGS,
    ),
    *[
        dg.AssetSpec(
            key=["app_db", name],
            description=f"External application table (owned by the app): {text}",
            group_name=GROUP,
            kinds={"postgres"},
            owners=OWNERS,
            tags=TAGS,
        )
        for name, text in _GOAL_TABLE_TEXT.items()
    ],
]


# ------------------------------------------------------------------------------ extraction
class ExtractionConfig(dg.Config):
    full_refresh: bool = Field(
        default=False,
        description="Ignore the stored cursor and re-read every document (upserts: no duplicates).",
    )
    page_size: int = Field(default=1000, ge=1, le=10000, description="Documents per Firestore page.")
    max_documents: Optional[int] = Field(
        default=None, ge=1, description="Stop after this many documents (the cursor is kept; the next run continues)."
    )
    reread_overlap_minutes: int = Field(
        default=0,
        ge=0,
        description=(
            "Re-read documents whose timestamp is up to this many minutes before the cursor, to "
            "pick up events written late with an older timestamp (costs those re-reads)."
        ),
    )
    count_untimed: bool = Field(
        default=True,
        description="Count documents without a valid timestamp (aggregation queries; they cannot be read incrementally).",
    )


@dg.asset(
    key=EXTRACTED_EVENTS_KEY,
    deps=[FIRESTORE_EVENTS_KEY],
    group_name=GROUP,
    kinds={"firestore", "postgres"},
    owners=OWNERS,
    tags=TAGS,
    retry_policy=RETRY,
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_VALID_DOCUMENTS,
            asset=EXTRACTED_EVENTS_KEY,
            description="WARN when this run read documents with a missing or ill-typed field (quarantined).",
        )
    ],
)
def firestore_app_usage_events(
    context: dg.AssetExecutionContext,
    config: ExtractionConfig,
    firestore: FirestoreResource,
    app_db: AppDatabase,
) -> dg.MaterializeResult:
    """Firestore app-usage event documents, extracted incrementally into PostgreSQL.

    Reads the Firestore collection group `{FIREBASE_EVENTS_SUBCOLLECTION}` (one query ordered
    by `timestamp`, `__name__`, paged with `start_after`; never one query per user) from the
    cursor stored in `extraction_cursors`, so each document is read once. Writes valid events
    to `firestore_app_usage_events` (upsert on the document path), invalid ones (missing or
    ill-typed fields) to `firestore_app_usage_event_rejects` with the reasons, and the new
    cursor; each page's data and cursor commit in one transaction.

    Re-run safety: a re-run starts from the committed cursor and upserts by document path, so
    a crashed, repeated or `full_refresh` run never duplicates or loses an event.
    """
    now = utc_now()
    with app_db.begin() as conn:
        store.ensure_schema(conn)
        stored = store.read_cursor(conn, firestore.source_name)
    after = None if config.full_refresh else stored
    since = None
    if after is not None and config.reread_overlap_minutes > 0:
        since = after.timestamp - dt.timedelta(minutes=config.reread_overlap_minutes)
        after = None
    context.log.info(
        f"Reading {firestore.describe()} "
        + (f"after {stored.timestamp.isoformat()}" if after else ("from " + since.isoformat() if since else "from the start"))
    )

    totals = store.PageCounts()
    documents_read = out_of_scope = pages = 0
    cursor = stored
    for page in firestore.iter_event_pages(
        after, since=since, until=now, page_size=config.page_size, max_documents=config.max_documents
    ):
        split = split_documents(page.documents, firestore.root_collection, firestore.events_subcollection)
        with app_db.begin() as conn:
            counts = store.write_page(conn, firestore.source_name, split, page.cursor, len(page.documents), now)
            cursor = store.read_cursor(conn, firestore.source_name)
        totals.add(counts)
        documents_read += len(page.documents)
        out_of_scope += split.out_of_scope
        pages += 1
        for reject in split.rejects[:5]:
            context.log.warning(f"Rejected {reject['document_path']}: {reject['reasons']}")

    untimed = firestore.count_untimed_documents(until=now) if config.count_untimed else None
    with app_db.begin() as conn:
        total_rows = store.table_count(conn, store.EVENTS_TABLE)
        rejects_total = store.table_count(conn, store.REJECTS_TABLE)
    if totals.rejected:
        context.log.warning(
            f"{totals.rejected} document(s) with a missing or ill-typed field were skipped and "
            f"quarantined in {store.REJECTS_TABLE}."
        )
    if untimed and untimed.without_valid_timestamp:
        context.log.warning(
            f"{untimed.without_valid_timestamp} document(s) of the collection group have no valid "
            "`timestamp` and cannot be read incrementally (see docs/engagement.md)."
        )
    metadata: dict[str, Any] = {
        "dagster/row_count": total_rows,
        "documents_read": documents_read,
        "pages": pages,
        "inserted": totals.inserted,
        "updated": totals.updated,
        "unchanged": totals.unchanged,
        "rejected": totals.rejected,
        "out_of_scope": out_of_scope,
        "rejects_total": rejects_total,
        "full_refresh": config.full_refresh,
        "source": firestore.describe(),
        "cursor_timestamp": cursor.timestamp.isoformat() if cursor else "",
    }
    if untimed is not None:
        metadata["without_valid_timestamp"] = untimed.without_valid_timestamp
        metadata["future_dated"] = untimed.future_dated
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name=CHECK_VALID_DOCUMENTS,
                passed=totals.rejected == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"rejected": totals.rejected, "documents_read": documents_read},
            )
        ],
    )


# ------------------------------------------------------------------------------ signals
class UserIdsConfig(dg.Config):
    user_ids: Optional[list[str]] = Field(
        default=None,
        description=(
            "Ad-hoc mode: recompute only these users in the partition (their rows are replaced, "
            "every other row is untouched). Omit to recompute the whole partition."
        ),
    )


def _requested_users(config: UserIdsConfig) -> Optional[list[str]]:
    if config.user_ids is None:
        return None
    users = sorted({u.strip() for u in config.user_ids if u and u.strip()})
    if not users:
        raise dg.Failure("user_ids is empty: omit it to recompute the whole partition.", allow_retries=False)
    return users


def _require_goal_tables(app_db: AppDatabase) -> None:
    with app_db.connect() as conn:
        missing = store.missing_goal_tables(conn)
    if missing:
        raise dg.Failure(
            f"The application database lacks the goal tables {', '.join(missing)}. They belong to "
            "the application (check APP_DATABASE_URL); locally, seed them with "
            "`python -m analytics_platform.demo --domain engagement`.",
            allow_retries=False,
        )


def _one_row_check(
    app_db: AppDatabase, table: str, day: dt.date, expected_users: Optional[int]
) -> dg.AssetCheckResult:
    with app_db.connect() as conn:
        stats = store.partition_stats(conn, table, day)
    passed = stats.rows == stats.distinct_users and stats.empty_user_ids == 0
    if expected_users is not None:
        passed = passed and stats.rows == expected_users
    metadata = {
        "rows": stats.rows,
        "distinct_users": stats.distinct_users,
        "empty_user_ids": stats.empty_user_ids,
    }
    if expected_users is not None:
        metadata["users_evaluated"] = expected_users
    return dg.AssetCheckResult(
        check_name=CHECK_ONE_ROW, passed=passed, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata
    )


PARTITIONS = daily_partitions()


@dg.asset(
    key=SIGNALS_KEY,
    deps=[EXTRACTED_EVENTS_KEY, *GOAL_TABLE_KEYS],
    partitions_def=PARTITIONS,
    group_name=GROUP,
    kinds={"postgres", "pandas"},
    owners=OWNERS,
    tags=TAGS,
    retry_policy=RETRY,
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_ONE_ROW,
            asset=SIGNALS_KEY,
            description="Exactly one row per evaluated user for the partition's as_of_date, no empty user_id.",
        )
    ],
)
def user_engagement_signals(
    context: dg.AssetExecutionContext, config: UserIdsConfig, app_db: AppDatabase
) -> dg.MaterializeResult:
    """Engagement signals per user as of the end of the partition day D (T = D + 1 day, 00:00 UTC).

    Reads the extracted events (`firestore_app_usage_events`, only those before T) and the goal
    tables (`user_goals`, `goals`, `apps`, `app_goal_sub_categories`), aggregated per user, app
    and week in one set-based PostgreSQL query (`sql/engagement/postgres/user_aggregates.sql`);
    the rules are vectorised (`engagement/rules.py`). Writes `user_engagement_signals`
    (PK user_id, as_of_date): every user with a goal or an event before T, or only the users of
    run config `user_ids`; and, in the same transaction, the aggregates behind each row
    (F_0..F_9, counts, tier flags) to `user_engagement_aggregates`.

    Re-run safety: the partition's rows (or only the requested users' rows) are deleted and
    inserted again in one transaction, and the result depends only on D and the data, so a
    re-run or backfill replaces rather than duplicates; readers never see a half-written day.
    """
    day = partition_day(context.partition_key)
    as_of = rules.as_of_for_day(day)
    users = _requested_users(config)
    _require_goal_tables(app_db)
    computed_at = utc_now()
    with app_db.begin() as conn:
        store.ensure_schema(conn)
        store.write_aggregates(conn, as_of, day, computed_at, users)  # set-based, inside PostgreSQL
        aggregates = store.read_aggregates(conn, day, users)
        signals = rules.compute_signals(aggregates)
        written = store.replace_partition_rows(conn, store.SIGNALS_TABLE, signals, day, computed_at, users)
    check = _one_row_check(app_db, store.SIGNALS_TABLE, day, None if users else len(signals))
    with app_db.connect() as conn:
        partition_rows = store.partition_stats(conn, store.SIGNALS_TABLE, day).rows
    context.log.info(
        f"Signals as of {as_of.isoformat()}: {len(signals)} user(s) evaluated"
        + (f" of {len(users)} requested" if users else "")
    )
    metadata: dict[str, Any] = {
        "dagster/row_count": partition_rows,
        "as_of": as_of.isoformat(),
        "mode": "user_ids" if users else "partition",
        "users_evaluated": len(signals),
        "rows_written": written.inserted,
        "rows_replaced": written.deleted,
        **{f"true_{flag}": int(signals[flag].sum()) for flag in rules.SIGNAL_FLAGS},
        "events_counted": int(signals["event_count"].sum()),
    }
    if users:
        metadata["users_requested"] = len(users)
        metadata["users_without_goal_or_event"] = len(set(users) - set(signals["user_id"]))
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


@dg.asset(
    key=MILESTONES_KEY,
    deps=[SIGNALS_KEY],
    partitions_def=PARTITIONS,
    group_name=GROUP,
    kinds={"postgres", "pandas"},
    owners=OWNERS,
    tags=TAGS,
    retry_policy=RETRY,
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_ONE_ROW,
            asset=MILESTONES_KEY,
            description="Exactly one row per user for the partition's as_of_date, no empty user_id.",
        ),
        dg.AssetCheckSpec(
            CHECK_MATCHES_SIGNALS,
            asset=MILESTONES_KEY,
            description="The partition has a milestone row for exactly the users that have a signals row.",
        ),
        dg.AssetCheckSpec(
            CHECK_IMPLY_GOAL,
            asset=MILESTONES_KEY,
            description="No tier milestone is true for a user whose goal setting is not complete.",
        ),
    ],
)
def user_milestones(
    context: dg.AssetExecutionContext, config: UserIdsConfig, app_db: AppDatabase
) -> dg.MaterializeResult:
    """Goal milestones per user as of the end of the partition day D (T = D + 1 day, 00:00 UTC).

    Reads the partition's rows of `user_engagement_signals` and, from `user_engagement_aggregates`
    (written with them), whether each user has a tier-1 / tier-2 aligned event before T
    (`sql/engagement/postgres/milestone_inputs.sql`: no second scan of the events); the rules are
    vectorised (`engagement/rules.py`). Writes `user_milestones` (PK user_id, as_of_date), one row
    per user of the signals partition (or only the users of run config `user_ids`).

    Re-run safety: the partition's rows (or only the requested users' rows) are deleted and
    inserted again in one transaction; the result depends only on D, the stored signals and
    the data, so re-runs and backfills replace rather than duplicate.
    """
    day = partition_day(context.partition_key)
    as_of = rules.as_of_for_day(day)
    users = _requested_users(config)
    computed_at = utc_now()
    with app_db.begin() as conn:
        store.ensure_schema(conn)
        inputs = store.load_milestone_inputs(conn, day, users)
        if not inputs.empty and not inputs["aggregates_found"].all():
            raise dg.Failure(
                f"{int((~inputs['aggregates_found']).sum())} signals row(s) of {day.isoformat()} have no "
                f"row in {store.AGGREGATES_TABLE}: re-materialize app_db/user_engagement_signals for this "
                "partition (it writes both in one transaction).",
                allow_retries=False,
            )
        milestones = rules.compute_milestones(inputs)
        written = store.replace_partition_rows(conn, store.MILESTONES_TABLE, milestones, day, computed_at, users)
    if inputs.empty:
        context.log.warning(
            f"No signals rows for {day.isoformat()}"
            + (" and these users" if users else "")
            + ": materialize app_db/user_engagement_signals for this partition first."
        )
    with app_db.connect() as conn:
        stats = store.partition_stats(conn, store.MILESTONES_TABLE, day)
        without_goal = store.milestones_without_goal_setting(conn, day)
        only_milestones, only_signals = store.milestone_users_not_in_signals(conn, day)
    checks = [
        _one_row_check(app_db, store.MILESTONES_TABLE, day, None),
        dg.AssetCheckResult(
            check_name=CHECK_MATCHES_SIGNALS,
            passed=only_milestones == 0 and only_signals == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"milestone_rows_without_signals": only_milestones, "signals_rows_without_milestones": only_signals},
        ),
        dg.AssetCheckResult(
            check_name=CHECK_IMPLY_GOAL,
            passed=without_goal == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"rows_with_milestone_but_no_goal_setting": without_goal},
        ),
    ]
    metadata: dict[str, Any] = {
        "dagster/row_count": stats.rows,
        "as_of": as_of.isoformat(),
        "mode": "user_ids" if users else "partition",
        "users_evaluated": len(milestones),
        "rows_written": written.inserted,
        "rows_replaced": written.deleted,
        **{f"true_{flag}": int(milestones[flag].sum()) for flag in rules.MILESTONE_FLAGS},
    }
    if users:
        metadata["users_requested"] = len(users)
        metadata["users_without_signals_row"] = len(set(users) - set(milestones["user_id"]))
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


ASSETS = [*SOURCE_SPECS, firestore_app_usage_events, user_engagement_signals, user_milestones]
