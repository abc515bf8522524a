"""Job ``mixpanel_migrate_events_table``: the one-off switch-over of the old collector's
events table into the platform's layout (the work: :func:`migrate.migrate_events_table`).

Run it once, with the Mixpanel schedules stopped::

    dagster job execute -m analytics_platform.definitions -j mixpanel_migrate_events_table
    # report only:
    dagster job execute -m analytics_platform.definitions -j mixpanel_migrate_events_table \
      --config-json '{"ops": {"migrate_events_table": {"config": {"dry_run": true}}}}'
"""

import dagster as dg
from pydantic import Field

from analytics_platform.mixpanel import migrate
from analytics_platform.resources.warehouse import Warehouse
from analytics_platform.settings import get_settings


class MigrateEventsTableConfig(dg.Config):
    dry_run: bool = Field(default=False, description="report the differences and the row counts, change nothing")


@dg.op(tags={"domain": "mixpanel"})
def migrate_events_table(
    context: dg.OpExecutionContext, config: MigrateEventsTableConfig, warehouse: Warehouse
) -> dg.Output:
    """Reads `{BIGQUERY_DATASET}.{BIGQUERY_TABLE}` in its old layout; writes it, one row per
    (event_id, event date), into a new table in the platform's layout that takes its name,
    the old one kept as `{table}__before_migration_<UTC time>`.  Re-run safety: a table
    already in the new layout is left alone; an interrupted run resumes or restarts."""
    settings = get_settings()
    try:
        result = migrate.migrate_events_table(
            warehouse,
            settings.bigquery_dataset,
            settings.bigquery_table,
            dry_run=config.dry_run,
            log=context.log.info,
        )
    except migrate.MigrationError as exc:
        raise dg.Failure(description=str(exc)) from None
    context.add_output_metadata(result.metadata())
    return dg.Output(result.status)


@dg.job(name=migrate.MIGRATION_JOB, tags={"analytics_platform/mixpanel_ingest": "migration"},
        description="Migrate the old collector's Mixpanel events table into the platform's layout (once).")
def mixpanel_migrate_events_table() -> None:
    migrate_events_table()


JOBS = [mixpanel_migrate_events_table]
