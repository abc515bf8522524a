"""Assets of the engagement domain (specs/signals.md): incremental Firestore extraction into
the warehouse mirror, then daily engagement signals and goal milestones (results in the
application PostgreSQL).

Thin wiring: run config -> one call into ``store.py`` (I/O and each asset's work; warehouse
SQL in ``sql/engagement``, Postgres SQL in ``sql/engagement/postgres``), which applies the
pure rules of ``rules.py`` (document validation, signals, milestones) ->
``MaterializeResult`` with the result's metadata and the checks of ``checks.py``.
"""


import contextlib
from typing import Iterator, Optional

import dagster as dg
from pydantic import Field

from analytics_platform.common import daily_partitions, partition_day
from analytics_platform.engagement import checks, rules, store
from analytics_platform.engagement.checks import (
    CHECK_IMPLY_GOAL,
    CHECK_MATCHES_SIGNALS,
    CHECK_ONE_ROW,
    CHECK_VALID_DOCUMENTS,
)
from analytics_platform.resources.app_db import AppDatabase
from analytics_platform.resources.firestore import FirestoreService
from analytics_platform.resources.warehouse import Warehouse
from analytics_platform.settings import get_settings

GROUP = "engagement"
OWNERS = ["team:data-platform"]
TAGS = {"domain": "engagement"}

FIRESTORE_EVENTS_KEY = dg.AssetKey(["firestore", "app_usage_events"])
# [dataset, table] with the default dataset name (ENGAGEMENT_DATASET)
EXTRACTED_EVENTS_KEY = dg.AssetKey(["engagement", "firestore_app_usage_events"])
SIGNALS_KEY = dg.AssetKey(["app_db", "user_engagement_signals"])
MILESTONES_KEY = dg.AssetKey(["app_db", "user_milestones"])
GOAL_TABLE_KEYS = [dg.AssetKey(["app_db", name]) for name in store.GOAL_TABLES]

EXTRACT_OP = "engagement__firestore_app_usage_events"
SIGNALS_OP = "app_db__user_engagement_signals"
MILESTONES_OP = "app_db__user_milestones"

# every asset of this domain is safe to re-run, so transient failures (Firestore, PostgreSQL)
# are retried with exponential backoff and jitter
RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

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
            "`engagement/firestore_app_usage_events`."
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


def _mirror(warehouse: Warehouse) -> store.Mirror:
    return store.Mirror(warehouse, get_settings().engagement_dataset)


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
    reread_window_hours: float = Field(
        default=store.DEFAULT_REREAD_WINDOW_HOURS,
        ge=0,
        description=(
            "Re-read documents whose timestamp is up to this many hours before the cursor, to "
            "pick up events uploaded late with an older timestamp (costs those re-reads; 0: none)."
        ),
    )
    count_untimed: bool = Field(
        default=True,
        description="Count documents without a valid timestamp (aggregation queries; they cannot be read incrementally).",
    )
    flush_documents: int = Field(
        default=store.DEFAULT_FLUSH_DOCUMENTS,
        ge=1,
        description="Write the buffered documents to the warehouse (then the cursor) every this many documents.",
    )
    untimed_count_timeout_seconds: float = Field(
        default=store.DEFAULT_UNTIMED_COUNT_TIMEOUT_SECONDS,
        gt=0,
        description="Bound of each untimed-document count query; a slower or failing count is reported, never fatal.",
    )


@dg.asset(
    key=EXTRACTED_EVENTS_KEY,
    deps=[FIRESTORE_EVENTS_KEY],
    group_name=GROUP,
    kinds={"firestore", "bigquery"},
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
    firestore: FirestoreService,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Firestore app-usage event documents, extracted incrementally into the warehouse.

    Reads the Firestore collection group `{FIREBASE_EVENTS_SUBCOLLECTION}` (one query ordered
    by `timestamp`, `__name__`, paged with `start_after`; never one query per user) from the
    cursor stored in `{ENGAGEMENT_DATASET}.extraction_cursors` (re-reading `reread_window_hours`
    behind it for late uploads). Writes valid events to `firestore_app_usage_events`
    (partitioned by event date, clustered by user; upsert on the document path), invalid
    ones (missing or ill-typed fields) to `firestore_app_usage_event_rejects` with the
    reasons, then the new cursor. The signals asset runs the same read itself when needed;
    this asset is for a manual `full_refresh` or a catch-up outside the daily job.

    Re-run safety: the data is written before the cursor and upserted by document path, so
    a crashed, repeated or `full_refresh` run never duplicates or loses an event.
    """
    with _fail_without_retry():
        result = store.extract_events(
            _mirror(warehouse),
            firestore,
            full_refresh=config.full_refresh,
            page_size=config.page_size,
            max_documents=config.max_documents,
            reread_window_hours=config.reread_window_hours,
            count_untimed=config.count_untimed,
            untimed_count_timeout=config.untimed_count_timeout_seconds,
            flush_documents=config.flush_documents,
            log=context.log,
        )
    return dg.MaterializeResult(metadata=result.metadata(), check_results=[checks.documents_valid(result)])


# ------------------------------------------------------------------------------ signals
class UserIdsConfig(dg.Config):
    user_ids: Optional[list[str]] = Field(
        default=None,
        description=(
            "Ad-hoc mode: recompute only these users in the partition (their rows are replaced, "
            "every other row is untouched). Omit to recompute the whole partition."
        ),
    )


class SignalsConfig(UserIdsConfig):
    reread_window_hours: float = Field(
        default=store.DEFAULT_REREAD_WINDOW_HOURS,
        ge=0,
        description=(
            "When the run reads Firestore to bring the mirror up to T: re-read documents up to this many "
            "hours behind the cursor (late uploads). A mirror read completely until T + this window "
            "is not read again (backfills of old days cost no Firestore reads)."
        ),
    )
    mirror_max_age_minutes: float = Field(
        default=0,
        ge=0,
        description=(
            "Skip the Firestore read when the last complete read ended less than this many minutes ago "
            "(the daily schedule sets it so the partitions of one tick share one read). 0: always read."
        ),
    )
    untimed_count_timeout_seconds: float = Field(
        default=store.DEFAULT_UNTIMED_COUNT_TIMEOUT_SECONDS,
        gt=0,
        description="Bound of each untimed-document count query; a slower or failing count is reported, never fatal.",
    )


@contextlib.contextmanager
def _fail_without_retry() -> Iterator[None]:
    """An invalid request, a missing input, or Firestore unreachable after the client's own
    retries fails the run for good (no retry policy), naming the cause."""
    try:
        yield
    except (rules.InvalidRunRequest, store.MissingInputs, store.IncompleteMirror, store.FirestoreUnavailable) as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None


PARTITIONS = daily_partitions()


@dg.asset(
    key=SIGNALS_KEY,
    deps=[EXTRACTED_EVENTS_KEY, *GOAL_TABLE_KEYS],
    partitions_def=PARTITIONS,
    group_name=GROUP,
    kinds={"firestore", "bigquery", "postgres"},
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
    context: dg.AssetExecutionContext,
    config: SignalsConfig,
    app_db: AppDatabase,
    firestore: FirestoreService,
    warehouse: Warehouse,
) -> dg.MaterializeResult:
    """Engagement signals per user as of the end of the partition day D (T = D + 1 day, 00:00 UTC).

    First brings the mirror up to T itself (``store.ensure_mirror_current``: an incremental
    Firestore read from the stored cursor, re-reading `reread_window_hours` behind it for
    late uploads, unless a complete read already covers T plus that window); Firestore
    unreachable fails the run, naming the cause, before anything is computed. Then reads
    the mirrored events in the warehouse (only those before T) and the goal tables
    (`user_goals`, `goals`, `apps`, `app_goal_sub_categories`, read from PostgreSQL for the
    run), aggregated per user, app and week in one set-based BigQuery-dialect statement
    (`sql/engagement/user_aggregates.sql`) into the warehouse table
    `user_engagement_aggregates` (F_0..F_9, counts, tier flags behind each row); the rules are
    vectorised (`engagement/rules.py`). Writes `user_engagement_signals` in PostgreSQL
    (PK user_id, as_of_date): every user with a goal or an event before T, or only the users
    of run config `user_ids`.

    Re-run safety: the partition's aggregates and rows (or only the requested users') are
    replaced, the PostgreSQL rows in one transaction, and the result depends only on D and the
    data, so a re-run or backfill replaces rather than duplicates; readers never see a
    half-written day.
    """
    day = partition_day(context.partition_key)
    with _fail_without_retry():
        users = rules.requested_users(config.user_ids)
        mirror = _mirror(warehouse)
        sync = store.ensure_mirror_current(
            mirror, firestore, rules.as_of_for_day(day),
            reread_window_hours=config.reread_window_hours,
            max_age_minutes=config.mirror_max_age_minutes,
            untimed_count_timeout=config.untimed_count_timeout_seconds,
            log=context.log,
        )
        result = store.write_signals_partition(app_db, mirror, day, users, context.log)
    return dg.MaterializeResult(
        metadata={**result.metadata(), **sync.metadata()}, check_results=checks.signals_checks(result)
    )


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
    context: dg.AssetExecutionContext, config: UserIdsConfig, app_db: AppDatabase, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Goal milestones per user as of the end of the partition day D (T = D + 1 day, 00:00 UTC).

    Reads the partition's rows of `user_engagement_signals` (PostgreSQL) and, from the
    warehouse's `user_engagement_aggregates` (written with them), whether each user has a
    tier-1 / tier-2 aligned event before T (no second scan of the events); the rules are
    vectorised (`engagement/rules.py`). Writes `user_milestones` (PK user_id, as_of_date), one row
    per user of the signals partition (or only the users of run config `user_ids`).

    Re-run safety: the partition's rows (or only the requested users' rows) are deleted and
    inserted again in one transaction; the result depends only on D, the stored signals and
    the data, so re-runs and backfills replace rather than duplicate.
    """
    with _fail_without_retry():
        users = rules.requested_users(config.user_ids)
        result = store.write_milestones_partition(
            app_db, _mirror(warehouse), partition_day(context.partition_key), users, context.log
        )
    return dg.MaterializeResult(metadata=result.metadata(), check_results=checks.milestones_checks(result))


ASSETS = [*SOURCE_SPECS, firestore_app_usage_events, user_engagement_signals, user_milestones]
