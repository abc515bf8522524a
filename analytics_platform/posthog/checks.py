"""Asset checks of the posthog domain, evaluated by the assets themselves from the
statistics of the rows they just wrote (``sql/posthog/sessions_partition_stats.sql`` and
``persons_stats.sql``): the specs and how each result is read, side by side."""

from __future__ import annotations

import dagster as dg

from analytics_platform.posthog.store import PersonsRun, SessionsRun

CHECK_UNIQUE = "unique_session_id_per_partition"
CHECK_UNIQUE_TABLE = "unique_session_id_table_wide"
CHECK_ORDER = "session_end_not_before_start"
CHECK_NON_NEGATIVE = "non_negative_counts"
PERSON_CHECK_UNIQUE = "unique_distinct_id"
PERSON_CHECK_NON_NEGATIVE = "non_negative_counts"


def sessions_check_specs(asset: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        # blocking: a failure stops posthog_aggregated/persons (rebuilt from these rows) in the same run
        dg.AssetCheckSpec(CHECK_UNIQUE, asset=asset, blocking=True, description="Each session_id appears once per session_date partition and is never NULL (blocking: persons are not rebuilt from duplicated sessions)."),
        dg.AssetCheckSpec(CHECK_UNIQUE_TABLE, asset=asset, blocking=True, description="Each session_id appears once in the whole table (a session moved to an earlier day by a late event is not left under the later day; blocking: persons never count a session twice)."),
        dg.AssetCheckSpec(CHECK_ORDER, asset=asset, description="session_end >= session_start (both set) on every row."),
        dg.AssetCheckSpec(CHECK_NON_NEGATIVE, asset=asset, description="Counts and duration are >= 0; max_scroll_depth within [0, 1]."),
    ]


def sessions_check_results(run: SessionsRun) -> list[dg.AssetCheckResult]:
    dup, null_ids = run.total("duplicate_session_ids"), run.total("null_session_ids")
    bad_order, negative = run.total("end_before_start"), run.total("negative_counts")
    return [
        dg.AssetCheckResult(
            check_name=CHECK_UNIQUE,
            passed=dup == 0 and null_ids == 0,
            metadata={"duplicate_session_ids": dup, "null_session_ids": null_ids,
                      "days_failing": dg.MetadataValue.json(run.days_failing("duplicate_session_ids"))},
        ),
        dg.AssetCheckResult(
            check_name=CHECK_UNIQUE_TABLE,
            passed=run.duplicate_session_ids_table_wide == 0,
            metadata={"duplicate_session_ids": run.duplicate_session_ids_table_wide},
        ),
        dg.AssetCheckResult(
            check_name=CHECK_ORDER,
            passed=bad_order == 0,
            metadata={"rows_failing": bad_order,
                      "days_failing": dg.MetadataValue.json(run.days_failing("end_before_start"))},
        ),
        dg.AssetCheckResult(
            check_name=CHECK_NON_NEGATIVE,
            passed=negative == 0,
            metadata={"rows_failing": negative,
                      "days_failing": dg.MetadataValue.json(run.days_failing("negative_counts"))},
        ),
    ]


def persons_check_specs(asset: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(PERSON_CHECK_UNIQUE, asset=asset, description="One row per distinct_id (never NULL) and per PostHog person_id."),
        dg.AssetCheckSpec(PERSON_CHECK_NON_NEGATIVE, asset=asset, description="Counts and durations >= 0; last_session_at >= first_session_at."),
    ]


def persons_check_results(run: PersonsRun) -> list[dg.AssetCheckResult]:
    n = run.n
    return [
        dg.AssetCheckResult(
            check_name=PERSON_CHECK_UNIQUE,
            passed=n("duplicate_distinct_ids") == 0 and n("null_distinct_ids") == 0 and n("duplicate_person_ids") == 0,
            metadata={"duplicate_distinct_ids": n("duplicate_distinct_ids"), "null_distinct_ids": n("null_distinct_ids"),
                      "duplicate_person_ids": n("duplicate_person_ids")},
        ),
        dg.AssetCheckResult(
            check_name=PERSON_CHECK_NON_NEGATIVE,
            passed=n("negative_counts") == 0 and n("last_before_first") == 0,
            metadata={"rows_failing": n("negative_counts"), "last_before_first": n("last_before_first")},
        ),
    ]
