"""Asset checks of the engagement domain. They run inside their asset (``check_specs``), on
what the run's :mod:`store` result read back after its write; this module turns those
results into ``AssetCheckResult``s (no I/O here)."""

from __future__ import annotations

import dagster as dg

from analytics_platform.engagement.store import ExtractionResult, MilestonesResult, PartitionResult

CHECK_VALID_DOCUMENTS = "documents_valid"
CHECK_ONE_ROW = "one_row_per_user_and_date"
CHECK_MATCHES_SIGNALS = "same_users_as_signals"
CHECK_IMPLY_GOAL = "milestones_imply_goal_setting"


def documents_valid(result: ExtractionResult) -> dg.AssetCheckResult:
    """WARN when this run read documents with a missing or ill-typed field (quarantined)."""
    return dg.AssetCheckResult(
        check_name=CHECK_VALID_DOCUMENTS,
        passed=result.totals.rejected == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rejected": result.totals.rejected, "documents_read": result.documents_read},
    )


def one_row_per_user(result: PartitionResult, expected_users: int | None) -> dg.AssetCheckResult:
    """One row per user of the partition, no empty user_id (and, when ``expected_users`` is
    given, exactly that many rows)."""
    stats = result.stats
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


def signals_checks(result: PartitionResult) -> list[dg.AssetCheckResult]:
    """The checks of ``user_engagement_signals``: a whole-partition run must have a row for
    every evaluated user."""
    return [one_row_per_user(result, None if result.users else len(result.frame))]


def milestones_checks(result: MilestonesResult) -> list[dg.AssetCheckResult]:
    """The checks of ``user_milestones``."""
    return [
        one_row_per_user(result, None),
        dg.AssetCheckResult(
            check_name=CHECK_MATCHES_SIGNALS,
            passed=result.milestones_without_signals == 0 and result.signals_without_milestones == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "milestone_rows_without_signals": result.milestones_without_signals,
                "signals_rows_without_milestones": result.signals_without_milestones,
            },
        ),
        dg.AssetCheckResult(
            check_name=CHECK_IMPLY_GOAL,
            passed=result.without_goal_setting == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"rows_with_milestone_but_no_goal_setting": result.without_goal_setting},
        ),
    ]
