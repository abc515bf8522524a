"""Switching over from the old collector: the events table's layout, checked at set-up,
and the one-off migration of a table of another shape into the platform's layout.

The old Mixpanel collector wrote ``{BIGQUERY_DATASET}.{BIGQUERY_TABLE}`` (the platform's
default name) with six columns, no ``event_date``, its own partitioning / clustering (or
none).  Loading into such a table would add ``event_date`` as an empty column and every
daily query would miss the old rows, so :func:`check_events_table` (called by
``tables.ensure_events_table`` before anything is written) fails the run naming each
difference and :data:`MIGRATION_COMMAND`.

:func:`migrate_events_table` (job ``mixpanel_migrate_events_table``, or
``python -m analytics_platform.mixpanel.migrate``) copies the old table into
``{table}__migrating`` created in the new layout, one row per (``event_id``, UTC event
date) - the key the ingestion keeps unique, the first loaded row winning - verifies the
counts, then renames the old table to ``{table}__before_migration_<UTC timestamp>`` (the
backup, never dropped by the platform) and the new one to ``{table}``.  Re-running is
safe: a table already in the new layout is left alone; a migration interrupted before the
swap starts again from the untouched old table; one interrupted between the two renames
is completed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from analytics_platform.common import UTC, read_sql, render_sql, validate_identifier
from analytics_platform.mixpanel.tables import EVENTS_SCHEMA
from analytics_platform.resources.warehouse import BQ_TYPES, Column, TableLayout, expected_partitioning

_log = logging.getLogger(__name__)

MIGRATION_JOB = "mixpanel_migrate_events_table"
MIGRATION_COMMAND = f"dagster job execute -m analytics_platform.definitions -j {MIGRATION_JOB}"
MIGRATION_CLI = "python -m analytics_platform.mixpanel.migrate"
# The layout ``tables.ensure_events_table`` creates.
EVENTS_PARTITION_BY = "event_date"
EVENTS_CLUSTER_BY = ("event_name", "event_id")
# Columns a usable events table must have with these types; the others of EVENTS_SCHEMA
# (device_id, os, mp_processing_time_ms) are added when missing.
REQUIRED_COLUMNS = ("event_id", "event_name", "distinct_id", "event_timestamp", "inserted_at", "properties", "event_date")
MIGRATING_SUFFIX = "__migrating"
BACKUP_INFIX = "__before_migration_"


class EventsTableLayoutError(RuntimeError):
    """The events table exists with another layout (message: the differences and the
    migration command)."""


class MigrationError(RuntimeError):
    """The migration cannot proceed (nothing was swapped: the old table is untouched)."""


# --------------------------------------------------------------------------- the check
def layout_problems(layout: TableLayout) -> list[str]:
    """How ``layout`` differs from the events table the platform writes (empty: none)."""
    problems = []
    types = layout.column_types()
    for col in EVENTS_SCHEMA:
        have = types.get(col.name)
        if have is None:
            if col.name in REQUIRED_COLUMNS:
                problems.append(f"no column `{col.name}` ({col.type})")
        elif have != col.type:
            problems.append(f"column `{col.name}` is {have}, expected {col.type}")
    if layout.physical:
        want = expected_partitioning(EVENTS_PARTITION_BY)
        if layout.partitioning != want:
            problems.append(
                f"partitioned by {_describe_partitioning(layout.partitioning)}, expected `event_date` (DAY)"
            )
        if tuple(layout.clustering) != EVENTS_CLUSTER_BY:
            got = ", ".join(layout.clustering) or "nothing"
            problems.append(f"clustered by {got}, expected {', '.join(EVENTS_CLUSTER_BY)}")
    return problems


def _describe_partitioning(partitioning: Optional[str]) -> str:
    if not partitioning:
        return "nothing"
    column, _, unit = partitioning.partition(" ")
    return f"`{column}` ({unit})" if unit else f"`{column}`"


def layout_error_message(dataset: str, table: str, problems: Sequence[str]) -> str:
    return (
        f"The events table {dataset}.{table} exists with another layout than this platform "
        f"writes (the old collector's?): {'; '.join(problems)}. Nothing was written to it. "
        f"Migrate it once (copies it into the new layout without losing or duplicating a "
        f"row, keeps the old table as {table}{BACKUP_INFIX}<UTC time>): `{MIGRATION_COMMAND}` "
        f"(or `{MIGRATION_CLI}`); see docs/operations.md, 'Migrating the events table'."
    )


def check_events_table(warehouse: Any, dataset: str, table: str) -> None:
    """Raise :class:`EventsTableLayoutError` when ``dataset.table`` exists with another
    layout (BigQuery: its metadata - columns and types, time partitioning field,
    clustering fields; DuckDB: columns and types)."""
    layout = warehouse.table_layout(dataset, table)
    if layout is None:
        return
    problems = layout_problems(layout)
    if problems:
        raise EventsTableLayoutError(layout_error_message(dataset, table, problems))


# --------------------------------------------------------------------------- the migration
@dataclass
class MigrationResult:
    status: str  # "migrated", "already in the new layout", "no table", "completed the swap", "dry run"
    table: str
    problems: list[str] = field(default_factory=list)
    source_rows: int = 0
    migrated_rows: int = 0
    duplicates_removed: int = 0
    backup_table: Optional[str] = None

    def metadata(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "table": self.table,
            "differences": "; ".join(self.problems),
            "source_rows": self.source_rows,
            "migrated_rows": self.migrated_rows,
            "duplicates_removed": self.duplicates_removed,
            "backup_table": self.backup_table or "",
        }


def copy_fragments(old: TableLayout, target_schema: Sequence[Column]) -> dict[str, str]:
    """The parts of ``migrate_copy_events.sql`` / ``migrate_source_counts.sql`` that
    depend on the old table's columns (identifiers validated; no value)."""
    types = old.column_types()

    def event_date(alias: str) -> str:
        derived = f"DATE({alias}.event_timestamp)"
        return f"COALESCE({alias}.event_date, {derived})" if types.get("event_date") == "DATE" else derived

    select = []
    for col in target_schema:
        name = validate_identifier(col.name)
        have = types.get(name)
        if name == "event_date":
            expr = event_date("s")
        elif have is None:
            expr = f"CAST(NULL AS {col.type})"
        elif have == col.type:
            expr = f"s.{name}"
        elif col.type == "JSON" and have == "STRING":
            expr = f"PARSE_JSON(s.{name}, wide_number_mode=>'round')"
        else:
            expr = f"CAST(s.{name} AS {col.type})"
        select.append(f"{expr} AS {name}")
    order = "s.event_timestamp"
    if "inserted_at" in types:
        order = "s.inserted_at IS NULL, s.inserted_at, s.event_timestamp"
    return {
        "columns": ", ".join(validate_identifier(c.name) for c in target_schema),
        "select_columns": ",\n    ".join(select),
        "event_date": event_date("s"),
        "event_date_s2": event_date("s2"),
        "order_by": order,
    }


def target_schema(old: TableLayout) -> tuple[Column, ...]:
    """The events schema plus the old table's other columns (their data is kept)."""
    known = {c.name for c in EVENTS_SCHEMA}
    extra = tuple(Column(n, t) for n, t in old.columns if n not in known and t in BQ_TYPES)
    return tuple(EVENTS_SCHEMA) + extra


def migrate_events_table(
    warehouse: Any,
    dataset: str,
    table: str,
    *,
    now: Optional[dt.datetime] = None,
    dry_run: bool = False,
    log: Optional[Callable[[str], None]] = None,
) -> MigrationResult:
    """Migrate ``dataset.table`` into the platform's layout (see the module docstring)."""
    say = log or _log.info
    now = (now or dt.datetime.now(UTC)).astimezone(UTC)
    migrating = f"{table}{MIGRATING_SUFFIX}"
    name = f"{dataset}.{table}"
    old = warehouse.table_layout(dataset, table)
    if old is None:
        if warehouse.table_layout(dataset, migrating) is not None and not dry_run:
            # interrupted between the two renames: the copy was verified before the first
            warehouse.rename_table(dataset, migrating, table)
            say(f"{name}: completed an interrupted migration ({dataset}.{migrating} -> {name})")
            return MigrationResult("completed the swap", name)
        say(f"{name} does not exist: nothing to migrate (the first ingestion run creates it)")
        return MigrationResult("no table", name)
    problems = layout_problems(old)
    if not problems:
        say(f"{name} is already in the platform's layout: nothing to do")
        return MigrationResult("already in the new layout", name)
    types = old.column_types()
    missing = [c for c in ("event_id", "event_timestamp") if c not in types]
    if missing:
        raise MigrationError(f"{name} has no column {', '.join(missing)}: it cannot be keyed; migrate it by hand")
    say(f"{name} differs from the platform's layout: {'; '.join(problems)}")
    schema = target_schema(old)
    fragments = copy_fragments(old, schema)
    source = warehouse.query(
        render_sql(read_sql("mixpanel/migrate_source_counts"), fragments, dataset=dataset, table=table)
    ).iloc[0]
    result = MigrationResult("dry run" if dry_run else "migrated", name, problems,
                             source_rows=int(source["source_rows"]))
    keys = int(source["distinct_keys"])
    result.duplicates_removed = result.source_rows - keys
    unkeyed = int(source["null_event_ids"]) + int(source["null_timestamps"])
    if unkeyed:
        raise MigrationError(
            f"{name}: {source['null_event_ids']} row(s) without event_id and {source['null_timestamps']} "
            f"without event_timestamp cannot be placed in a daily partition; fix or remove them, then "
            f"run the migration again (nothing was changed)"
        )
    if dry_run:
        result.migrated_rows = keys
        say(f"dry run: {result.source_rows} rows would become {keys} ({result.duplicates_removed} duplicates)")
        return result
    warehouse.drop_table(dataset, migrating)  # a copy interrupted earlier
    warehouse.ensure_table(dataset, migrating, schema, partition_by=EVENTS_PARTITION_BY, cluster_by=EVENTS_CLUSTER_BY)
    warehouse.execute(
        render_sql(read_sql("mixpanel/migrate_copy_events"), fragments, dataset=dataset, table=table, target=migrating)
    )
    copied = warehouse.run_file("mixpanel/migrate_target_counts", {}, dataset=dataset, target=migrating).iloc[0]
    result.migrated_rows = int(copied["target_rows"])
    if result.migrated_rows != keys or int(copied["target_keys"]) != keys or int(copied["null_event_dates"]):
        warehouse.drop_table(dataset, migrating)
        raise MigrationError(
            f"{name}: the copy holds {result.migrated_rows} rows ({copied['target_keys']} keys), expected "
            f"{keys}: nothing was swapped, the old table is untouched"
        )
    backup = f"{table}{BACKUP_INFIX}{now:%Y%m%d_%H%M%S}"
    warehouse.rename_table(dataset, table, backup)
    warehouse.rename_table(dataset, migrating, table)
    result.backup_table = f"{dataset}.{backup}"
    say(
        f"{name}: migrated {result.source_rows} rows into the new layout as {result.migrated_rows} rows "
        f"({result.duplicates_removed} duplicates removed); the old table is kept as {result.backup_table}"
    )
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m analytics_platform.mixpanel.migrate [--dry-run]``: the migration job's
    work with the settings' warehouse, dataset and table."""
    from analytics_platform.resources import build_warehouse
    from analytics_platform.settings import get_settings

    parser = argparse.ArgumentParser(prog=MIGRATION_CLI, description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="report the differences and counts, change nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = get_settings()
    try:
        result = migrate_events_table(
            build_warehouse(settings), settings.bigquery_dataset, settings.bigquery_table, dry_run=args.dry_run
        )
    except MigrationError as exc:
        print(f"migration failed: {exc}", file=sys.stderr)
        return 1
    print(result.metadata())
    return 0


if __name__ == "__main__":
    sys.exit(main())
