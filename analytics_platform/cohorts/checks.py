"""Asset checks of the cohorts domain (the active-yesterday check is emitted by the
``peerplay/state_loss_temp_users`` asset itself, since it needs that run's ``as_of``).

``distinct_id_unique_not_null`` is blocking: it guards a side effect downstream in the same
run (the Mixpanel marking of ``mixpanel/state_loss_temp_user_cohort``), so when it fails the
marking step does not run and no profile is touched."""


import dagster as dg

from analytics_platform.cohorts.assets import TEMP_USERS_KEY
from analytics_platform.cohorts.store import CohortStore
from analytics_platform.resources.warehouse import Warehouse
from analytics_platform.settings import get_settings


@dg.asset_check(
    asset=TEMP_USERS_KEY,
    name="distinct_id_unique_not_null",
    description="Every temp user appears once, with a non-empty distinct_id (blocking: a failure "
    "stops the Mixpanel marking in the same run).",
    blocking=True,
)
def distinct_id_unique_not_null(warehouse: Warehouse) -> dg.AssetCheckResult:
    store = CohortStore(warehouse, get_settings())
    store.ensure_tables()
    stats = store.stats()
    return dg.AssetCheckResult(
        passed=stats.duplicate_rows == 0 and stats.empty_ids == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "rows": stats.row_count,
            "duplicate_rows": stats.duplicate_rows,
            "empty_ids": stats.empty_ids,
        },
    )


ASSET_CHECKS = [distinct_id_unique_not_null]
