"""The BigQuery SQL gate: every BigQuery statement the code can send, analysed by Google's
ZetaSQL (the analyzer BigQuery is built on) against the declared table schemas.

What is checked
    * each warehouse ``.sql`` file under ``sql/{mixpanel,cohorts,posthog}/``, rendered as
      the code renders it (identifiers through ``render_sql``; each variant of an optional
      part the code uses: the cohorts "partition pruning" lines kept and dropped, every
      shape of the posthog sessions MERGE built by ``build_sessions_merge_sql``);
    * the statements ``BigQueryWarehouse`` itself builds (``CREATE TABLE`` with
      ``PARTITION BY`` / ``CLUSTER BY``, ``ALTER TABLE ... ADD COLUMN``, the load
      ``INSERT`` / ``MERGE`` / ``DELETE`` and the JSON re-typing ``CREATE OR REPLACE TABLE``)
      for every table the code creates and every ``warehouse.load`` call it makes;
    * the ``rows_sql`` query an anomaly alert shows people to run on BigQuery.

Catalog
    Built from the ``Column`` declarations: ``analytics_platform/*/tables.py`` (the
    platform's tables and the declared PostHog / Firebase source tables) and, for a
    staging table, the load-job types ``BigQueryWarehouse`` stages with (JSON travels as
    STRING).  A table is reachable as ``dataset.table`` and as `` `dataset.table` ``.

Parameters (the documented choice)
    For each SQL file the gate binds the parameters the code binds: from the code's own
    parameter builders where one exists (``DetectionWindow.params()``,
    ``ActivityWindow.params()``, ``audit_params()``, ``RunWindow.params()``), otherwise a
    dict of Python values mirroring the call site (``_FILE_PARAMS`` below, one entry per
    call site, same names and Python types).  Each value is typed exactly as
    ``BigQueryWarehouse`` types it when it builds the job's ``QueryParameter`` (the
    warehouse's own function), so ``int`` -> INT64, ``datetime`` -> TIMESTAMP, a list ->
    ARRAY<...> and so on.  A parameter the SQL uses but the call does not bind fails the
    gate (ZetaSQL: "Query parameter ... not found").

Language (``bigquery_analyzer.py``)
    ZetaSQL's released features in ``PRODUCT_EXTERNAL`` mode (BigQuery's type system: no
    INT32/UINT64/PROTO ...) minus the features BigQuery does not have
    (``_NOT_IN_BIGQUERY``: aggregate ``FILTER (WHERE ...)``, JSON comparison, array
    equality, ``RETURNING``, lambdas, UUID, ...).  ZetaSQL may still accept a few
    ZetaSQL-only functions; everything DuckDB-only, every unknown column / table, every
    type mismatch and every missing parameter is rejected.

Warehouse-internal builders are reached through ONE adapter (section "Adapter" below):
when the warehouse's load / DDL builders move, only that section changes.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from analytics_platform.common import read_sql, render_sql
from analytics_platform_tests.bigquery_analyzer import Schema

# --- names used for the datasets / tables of the catalog (settings' defaults) -----------
MIXPANEL_DS = "mixpanel_data"
EVENTS = "mixpanel_events"
COHORT_DS = "peerplay"
POSTHOG_DS = "posthog_etl"
FIREBASE_DS = "firebase_etl_prod"
AGG_DS = "posthog_aggregated"
STAGED_BATCH = "_mixpanel_batch_0123456789ab"

NOW = dt.datetime(2026, 3, 9, 6, 30, tzinfo=dt.timezone.utc)
DAY = dt.date(2026, 3, 8)


@dataclass(frozen=True)
class GateStatement:
    """One statement as BigQuery would receive it, with what it runs against."""

    id: str
    sql: str
    params: Mapping[str, str]  # name -> BigQuery type ("INT64", "ARRAY<STRING>", ...)
    tables: Mapping[tuple[str, str], Schema]  # (dataset, table) -> columns
    xfail: Optional[str] = None  # a known failure, reason (kept visible, never silent)


def schema_of(columns: Sequence[Any]) -> Schema:
    """``Column`` declarations (or ``(name, type)`` pairs) as catalog columns."""
    out = []
    for c in columns:
        name, typ = (c.name, c.type) if hasattr(c, "name") else (c[0], c[1])
        out.append((name, typ))
    return tuple(out)


# =========================================================================================
# Adapter: the only place that reaches into resources/warehouse.py's internals.
# =========================================================================================
@functools.lru_cache(maxsize=None)
def _warehouse_adapter():
    """``(bigquery_param, RecordingBigQueryWarehouse)``:

    * ``bigquery_param(name, value)``: the ``google.cloud.bigquery`` query parameter
      ``BigQueryWarehouse`` binds for a Python value;
    * ``RecordingBigQueryWarehouse``: ``BigQueryWarehouse`` whose I/O (jobs, load jobs, table
      lookups) is replaced by recording, so ``ensure_table`` / ``load`` build their
      statements with the production code and hand them over instead of running them.

    Uses the BigQuery engine's internals (``resources/warehouse/bigquery_engine.py``):
    ``_bq_param``, ``_BQ_LOAD_TYPES`` and BigQueryWarehouse's I/O hooks ``execute`` /
    ``query_arrow`` / ``ensure_dataset`` / ``table_columns`` / ``_stage`` / ``_drop`` (the
    recorded statements are those BigQuery receives).
    """
    from analytics_platform.resources.warehouse import bigquery_engine as wh

    class RecordingBigQueryWarehouse(wh.BigQueryWarehouse):
        """Records ``(sql, params)``; ``existing`` maps (dataset, table) to the columns a
        lookup reports (absent: the table does not exist)."""

        def setup(self, existing: Mapping[tuple[str, str], Schema]) -> "RecordingBigQueryWarehouse":
            object.__setattr__(self, "_gate_tables", dict(existing))
            object.__setattr__(self, "_gate_load_types", {})
            object.__setattr__(self, "_gate_log", [])
            return self

        # catalog state, recorded with every statement
        def _snapshot(self) -> dict:
            return dict(self._gate_tables)

        def execute(self, sql, params=None):
            self._gate_log.append((sql, dict(params or {}), self._snapshot()))
            ctas = re.match(r"CREATE OR REPLACE TABLE `(\w+)\.(\w+)` AS", sql)
            if ctas:  # the JSON re-typing of a staging table: declared types from now on
                key = (ctas.group(1), ctas.group(2))
                self._gate_tables[key] = self._gate_load_types[key]
            create = re.match(r"CREATE TABLE IF NOT EXISTS `(\w+)\.(\w+)`", sql)
            if create:
                self._gate_tables[(create.group(1), create.group(2))] = self._gate_pending
            return 1

        def query_arrow(self, sql, params=None):
            self.execute(sql, params)
            import pyarrow as pa

            return pa.table({})

        def ensure_dataset(self, dataset):
            return None

        def table_columns(self, dataset, table):
            return [name for name, _ in self._gate_tables.get((dataset, table), ())]

        def ensure_table(self, dataset, table, schema, partition_by=None, cluster_by=()):
            object.__setattr__(self, "_gate_pending", schema_of(schema))
            return super().ensure_table(dataset, table, schema, partition_by, cluster_by)

        def _stage(self, data, dataset, name, schema):
            # what the load job creates: the load schema's types (JSON as STRING)
            load_types = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}
            staged = tuple(
                (c.name, load_types.get(wh._BQ_LOAD_TYPES[c.type], wh._BQ_LOAD_TYPES[c.type])) for c in schema
            )
            self._gate_tables[(dataset, name)] = staged
            self._gate_load_types[(dataset, name)] = schema_of(schema)

        def _drop(self, dataset, table):
            self._gate_tables.pop((dataset, table), None)

    return wh._bq_param, RecordingBigQueryWarehouse


# =========================================================================================
# Parameter typing (as BigQueryWarehouse binds them)
# =========================================================================================
def bound_types(params: Optional[Mapping[str, Any]]) -> dict[str, str]:
    """``{name: BigQuery type}`` of the query parameters built for ``params``."""
    bigquery_param, _ = _warehouse_adapter()
    out = {}
    for name, value in (params or {}).items():
        p = bigquery_param(name, value)
        if hasattr(p, "array_type"):
            out[name] = f"ARRAY<{_standard(p.array_type)}>"
        else:
            out[name] = _standard(p.type_)
    return out


def _standard(legacy: str) -> str:
    return {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}.get(legacy, legacy)


# =========================================================================================
# The catalog of every statement
# =========================================================================================
def _schemas() -> dict[str, Schema]:
    from analytics_platform.cohorts import tables as cohorts
    from analytics_platform.mixpanel import tables as mixpanel
    from analytics_platform.posthog import tables as posthog

    return {
        "mixpanel.events": schema_of(mixpanel.EVENTS_SCHEMA),
        "mixpanel.rejected": schema_of(mixpanel.REJECTED_SCHEMA),
        "mixpanel.anomalies": schema_of(mixpanel.ANOMALIES_SCHEMA),
        "mixpanel.export_log": schema_of(mixpanel.EXPORT_LOG_SCHEMA),
        "cohorts.temp_users": schema_of(cohorts.TEMP_USERS_SCHEMA),
        "cohorts.removed": schema_of(cohorts.REMOVED_SCHEMA),
        "cohorts.audit": schema_of(cohorts.AUDIT_SCHEMA),
        "posthog.persons": schema_of(posthog.PERSONS_SCHEMA),
        "posthog.events": schema_of(posthog.POSTHOG_EVENTS_SCHEMA),
        "posthog.sessions_export": schema_of(posthog.POSTHOG_SESSIONS_SCHEMA),
        "firebase.users": schema_of(posthog.FIREBASE_USERS_SCHEMA),
        "firebase.events": schema_of(posthog.FIREBASE_EVENTS_SCHEMA),
        **_engagement_schemas(),
    }


def _table_names() -> dict[str, tuple[str, str]]:
    from analytics_platform.cohorts import tables as cohorts
    from analytics_platform.mixpanel import tables as mixpanel
    from analytics_platform.posthog import tables as posthog

    return {
        "mixpanel.events": (MIXPANEL_DS, EVENTS),
        "mixpanel.rejected": (MIXPANEL_DS, mixpanel.REJECTED_TABLE),
        "mixpanel.anomalies": (MIXPANEL_DS, mixpanel.ANOMALIES_TABLE),
        "mixpanel.export_log": (MIXPANEL_DS, mixpanel.EXPORT_LOG_TABLE),
        "cohorts.temp_users": (COHORT_DS, cohorts.TEMP_USERS_TABLE),
        "cohorts.removed": (COHORT_DS, cohorts.REMOVED_TABLE),
        "cohorts.audit": (COHORT_DS, cohorts.AUDIT_TABLE),
        "posthog.persons": (AGG_DS, posthog.PERSONS_TABLE),
        "posthog.events": (POSTHOG_DS, posthog.EVENTS_TABLE),
        "posthog.sessions_export": (POSTHOG_DS, "sessions"),
        "firebase.users": (FIREBASE_DS, posthog.USERS_TABLE),
        "firebase.events": (FIREBASE_DS, posthog.EVENTS_TABLE),
        **_engagement_table_names(),
    }


def base_tables(**overrides: Schema) -> dict[tuple[str, str], Schema]:
    """Every declared table (plus the sessions aggregate of a run without export), keyed
    by (dataset, table); ``overrides`` replace a schema by its key in :func:`_schemas`."""
    from analytics_platform.posthog import rules as sessions_sql, tables as posthog

    schemas = _schemas()
    schemas.update(overrides)
    tables = {_table_names()[k]: v for k, v in schemas.items()}
    tables[(AGG_DS, posthog.SESSIONS_TABLE)] = schema_of(posthog.sessions_schema(sessions_sql.plan_carry([])))
    return tables


# =========================================================================================
# Statements: the warehouse SQL files
# =========================================================================================
def _file(name: str, fragments: Optional[Mapping[str, str]] = None, **ids: str) -> str:
    return render_sql(read_sql(name), fragments, **ids)


# Parameters of the call sites that have no parameter builder of their own: the same
# names and Python types the code passes (file -> params).
_FILE_PARAMS: dict[str, dict[str, Any]] = {
    # mixpanel/detect.py
    "mixpanel/window_counts": {
        "events": ["a", "b"], "window_micros": 5 * 60_000_000, "threshold": 10,
        "scan_start": NOW, "scan_end": NOW, "date_from": DAY, "date_to": DAY,
    },
    "mixpanel/anomaly_history": {"events": ["a"], "since": NOW},
    "mixpanel/window_samples": {
        "events": ["a"], "window_micros": 5 * 60_000_000, "window_starts": [NOW],
        "scan_start": NOW, "scan_end": NOW, "date_from": DAY, "date_to": DAY, "per_window": 3,
    },
    "mixpanel/pending_alerts": {},
    "mixpanel/table_row_count": {},
    # mixpanel/checks.py
    "mixpanel/check_duplicate_event_ids": {"date_from": DAY, "date_to": DAY},
    "mixpanel/check_null_timestamps": {"date_from": DAY, "date_to": DAY},
    # mixpanel/store.py (ingestion)
    "mixpanel/insert_new_events": {"date_from": DAY, "date_to": DAY, "slice_from": DAY, "slice_to": DAY, "rows_expected": -1},
    "mixpanel/insert_unparsable_events": {"date_from": DAY, "date_to": DAY},
    "mixpanel/count_unparsable_events": {},
    # mixpanel/migrate.py
    "mixpanel/migrate_source_counts": {},
    "mixpanel/migrate_copy_events": {},
    "mixpanel/migrate_target_counts": {},
    "mixpanel/delete_uncollected_events": {"from_date": DAY, "to_date": DAY, "events": ["a", "b"]},
    "mixpanel/partition_counts": {"from_date": DAY, "to_date": DAY},
    # mixpanel/checks.py (completeness record)
    "mixpanel/export_log_completeness": {"date_from": DAY, "date_to": DAY},
    # cohorts/store.py
    "cohorts/cohort_stats": {},
    "cohorts/select_events_loaded_until": {"since": NOW},
    "cohorts/unsynced_temp_users": {},
    "cohorts/mark_synced": {"synced_at": NOW, "ids": ["u1", "u2"]},
    "cohorts/delete_temp_users": {"ids": ["u1"]},
    "cohorts/summary_sent": {"process_name": "state_loss_temp_users", "step": "summary", "day": DAY.isoformat()},
    # ops/observations.py (external sources observed)
    "ops/observe_latest_timestamp": {"since": NOW, "until": NOW},
    "ops/observe_firebase_events": {"since": NOW, "until": NOW},
    # posthog/assets.py
    "posthog/sessions_event_stats": {"range_start": NOW, "range_end": NOW},
    "posthog/sessions_partition_stats": {"first_day": DAY, "last_day": DAY},
    "posthog/sessions_table_stats": {},
    "posthog/persons_rebuild": {"loaded_at": NOW},
    "posthog/persons_stats": {},
}


def _code_params() -> dict[str, dict[str, Any]]:
    """Parameters from the code's own builders."""
    from analytics_platform.cohorts import rules
    from analytics_platform.posthog import rules as sessions_sql

    window = sessions_sql.RunWindow(DAY, DAY + dt.timedelta(days=2), 1)
    return {
        "cohorts/detect_temp_users": rules.detection_window(NOW, 7).params(),
        "cohorts/active_yesterday": rules.yesterday_window(NOW).params(),
        "cohorts/insert_audit_log": rules.audit_params("run-1", "detect", "ok", {"day": DAY}, NOW),
        "posthog/sessions_merge": window.params(sessions_sql.DEFAULT_EVENT_NAMES, NOW),
        **_engagement_params(),
    }


def call_site_params() -> dict[str, list[tuple[str, set[str]]]]:
    """``{sql file: [(where, parameter names), ...]}`` of every call in the package that
    names a warehouse SQL file and passes its parameters as a dict literal
    (``warehouse.run_file("mixpanel/partition_counts", {"from_date": ..., ...}, ...)``)."""
    import ast

    from analytics_platform.common import SQL_DIR

    package = SQL_DIR.parent
    files = {f"{d}/{p.stem}" for d in WAREHOUSE_SQL_DOMAINS for p in (SQL_DIR / d).glob("*.sql")}
    found: dict[str, list[tuple[str, set[str]]]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and len(node.args) >= 2):
                continue
            name, params = node.args[0], node.args[1]
            if not (isinstance(name, ast.Constant) and name.value in files and isinstance(params, ast.Dict)):
                continue
            keys = {k.value for k in params.keys if isinstance(k, ast.Constant)}
            where = f"{path.relative_to(package.parent)}:{node.lineno}"
            found.setdefault(name.value, []).append((where, keys))
    return found


def params_of(name: str) -> dict[str, Any]:
    params = _code_params()
    return params[name] if name in params else _FILE_PARAMS[name]


_MIXPANEL_IDS = dict(dataset=MIXPANEL_DS, table=EVENTS)
_COHORT_IDS = dict(
    events_dataset=MIXPANEL_DS, events_table=EVENTS, cohort_dataset=COHORT_DS,
)


def _sql_file_statements() -> Iterator[GateStatement]:
    from analytics_platform.cohorts import tables as C
    from analytics_platform.mixpanel import tables as M

    tables = base_tables()

    def stmt(id_: str, name: str, sql: str, catalog=tables) -> GateStatement:
        return GateStatement(id_, sql, bound_types(params_of(name)), catalog)

    # mixpanel
    anomalies = dict(dataset=MIXPANEL_DS, anomalies=M.ANOMALIES_TABLE)
    for name in ("window_counts", "window_samples", "check_duplicate_event_ids", "check_null_timestamps",
                 "delete_uncollected_events", "partition_counts", "table_row_count"):
        yield stmt(f"mixpanel/{name}", f"mixpanel/{name}", _file(f"mixpanel/{name}", **_MIXPANEL_IDS))
    yield stmt("mixpanel/table_row_count[anomalies]", "mixpanel/table_row_count",
               _file("mixpanel/table_row_count", dataset=MIXPANEL_DS, table=M.ANOMALIES_TABLE))
    for name in ("anomaly_history", "pending_alerts"):
        yield stmt(f"mixpanel/{name}", f"mixpanel/{name}", _file(f"mixpanel/{name}", **anomalies))
    yield stmt("mixpanel/export_log_completeness", "mixpanel/export_log_completeness",
               _file("mixpanel/export_log_completeness", dataset=MIXPANEL_DS, export_log=M.EXPORT_LOG_TABLE))
    yield from _batch_write_statements(tables)
    yield from _migration_statements(tables)

    # cohorts: the events queries with and without their partition-pruning fragments
    from analytics_platform.cohorts.store import events_query_sql

    ids = dict(_COHORT_IDS, cohort_table=C.TEMP_USERS_TABLE, removed_table=C.REMOVED_TABLE)
    no_event_date = base_tables(**{"mixpanel.events": tuple(
        c for c in schema_of(M.EVENTS_SCHEMA) if c[0] != "event_date")})
    for name, keys in (
        ("detect_temp_users", ("events_dataset", "events_table", "cohort_dataset", "cohort_table", "removed_table")),
        ("active_yesterday", ("events_dataset", "events_table", "cohort_dataset", "cohort_table")),
        ("select_events_loaded_until", ("events_dataset", "events_table")),
    ):
        only = {k: ids[k] for k in keys}
        yield stmt(f"cohorts/{name}", f"cohorts/{name}", events_query_sql(f"cohorts/{name}", True, **only))
        yield stmt(f"cohorts/{name}[no event_date]", f"cohorts/{name}",
                   events_query_sql(f"cohorts/{name}", False, **only), no_event_date)
    cohort = dict(cohort_dataset=COHORT_DS, cohort_table=C.TEMP_USERS_TABLE)
    audit = dict(cohort_dataset=COHORT_DS, audit_table=C.AUDIT_TABLE)
    for name, ids_ in (("cohort_stats", cohort), ("unsynced_temp_users", cohort), ("mark_synced", cohort),
                       ("delete_temp_users", cohort), ("insert_audit_log", audit), ("summary_sent", audit)):
        yield stmt(f"cohorts/{name}", f"cohorts/{name}", _file(f"cohorts/{name}", **ids_))

    # posthog
    agg = dict(out_dataset=AGG_DS)
    from analytics_platform.posthog.store import properties_fragment

    def event_stats(properties_type: str) -> str:
        return _file("posthog/sessions_event_stats", {"properties_json": properties_fragment(properties_type)},
                     posthog_dataset=POSTHOG_DS)

    yield stmt("posthog/sessions_event_stats", "posthog/sessions_event_stats", event_stats("JSON"))
    yield stmt("posthog/sessions_event_stats[properties STRING]", "posthog/sessions_event_stats",
               event_stats("STRING"), _string_properties(tables))
    from analytics_platform.posthog import tables as P
    from analytics_platform.posthog.store import person_map_fragment

    with_persons_export = dict(tables)
    with_persons_export[(POSTHOG_DS, P.PERSONS_EXPORT_TABLE)] = schema_of(P.POSTHOG_PERSONS_SCHEMA)
    for label, columns, catalog in (
        ("no persons export", [], tables),
        ("persons export", [c.name for c in P.POSTHOG_PERSONS_SCHEMA], with_persons_export),
        ("persons export without versions", ["distinct_id", "person_id"], with_persons_export),
    ):
        person_map, _ = person_map_fragment(columns, POSTHOG_DS)
        yield stmt(f"posthog/persons_rebuild[{label}]", "posthog/persons_rebuild",
                   _file("posthog/persons_rebuild", {"person_map": person_map}, **agg), catalog)
    for name in ("sessions_partition_stats", "sessions_table_stats", "persons_stats"):
        yield stmt(f"posthog/{name}", f"posthog/{name}", _file(f"posthog/{name}", **agg))
    yield from _sessions_merge_statements()
    yield from _engagement_statements(tables, stmt)

    # ops: the external sources' newest record (ops/observations.py, one statement per source)
    from analytics_platform.ops.observations import SOURCES

    for source in SOURCES:
        dataset = POSTHOG_DS if source.dataset_setting == "posthog_dataset_id" else FIREBASE_DS
        if source.ts_column is None:
            yield stmt(f"ops/observe_firebase_events[{dataset}.{source.table}]", "ops/observe_firebase_events",
                       _file("ops/observe_firebase_events", dataset=dataset, table=source.table))
        else:
            yield stmt(f"ops/observe_latest_timestamp[{dataset}.{source.table}]", "ops/observe_latest_timestamp",
                       _file("ops/observe_latest_timestamp", dataset=dataset, table=source.table, ts_column=source.ts_column))


def _batch_write_statements(tables: Mapping[tuple[str, str], Schema]) -> Iterator[GateStatement]:
    """The events batch write (``EventsLoader.load_events`` -> ``Warehouse.write_batch``):
    each statement of the BigQuery script, against the staged batch as staged (properties
    as STRING) and the write-locks table.  The script's procedural frame (``DECLARE``,
    ``SET n = @@row_count``) is not a statement the analyzer resolves: the BigQuery
    emulator tests run the whole script."""
    from analytics_platform.mixpanel import store as S, tables as M
    from analytics_platform.resources.warehouse import write_lock as L

    staged = dict(tables)
    staged[(MIXPANEL_DS, STAGED_BATCH)] = schema_of(S.EVENTS_BATCH_SCHEMA)
    staged[(MIXPANEL_DS, L.WRITE_LOCKS_TABLE)] = schema_of(L.WRITE_LOCKS_SCHEMA)
    ids = dict(_MIXPANEL_IDS, batch_dataset=MIXPANEL_DS, batch=STAGED_BATCH, rejected=M.REJECTED_TABLE)
    for name in S.WRITE_EVENTS_STATEMENTS:
        yield GateStatement(name, _file(name, **ids), bound_types(params_of(name)), staged)
    lock = {"_lock_name": f"{MIXPANEL_DS}.{EVENTS}", "_lock_holder": "abc"}
    from analytics_platform.common import strip_sql_comments

    files = [strip_sql_comments(_file(n, **ids)).strip() for n in S.WRITE_EVENTS_STATEMENTS]
    guards = [None if n not in S.WRITE_EVENTS_GUARDS else list(S.WRITE_EVENTS_STATEMENTS).index(S.WRITE_EVENTS_GUARDS[n])
              for n in S.WRITE_EVENTS_STATEMENTS]
    script = L.bigquery_write_script(MIXPANEL_DS, files, guards)
    frame = [p for p in script.rstrip(";").split(";\n")
             if p.strip() not in files and not p.startswith(("DECLARE ", "SET ", "IF ", "END IF"))]
    for i, part in enumerate(frame):
        if part.startswith("SELECT n0"):
            continue  # reads the script's variables
        yield GateStatement(f"write_batch script #{i + 1}", part, bound_types(lock), staged)


# Shapes of an events table the migration (mixpanel/migrate.py) copies from.
_OLD_EVENTS_SHAPES: dict[str, Schema] = {
    # the old collector's (its README): no event_date, nor the platform's extra columns
    "old collector": (("event_timestamp", "TIMESTAMP"), ("inserted_at", "TIMESTAMP"), ("event_name", "STRING"),
                      ("properties", "JSON"), ("distinct_id", "STRING"), ("event_id", "STRING")),
    # every column, properties as STRING and one extra column (kept by the migration)
    "string properties + extra column": tuple(
        (n, "STRING" if n == "properties" else t) for n, t in (
            ("event_id", "STRING"), ("event_name", "STRING"), ("distinct_id", "STRING"),
            ("event_timestamp", "TIMESTAMP"), ("inserted_at", "TIMESTAMP"), ("properties", "JSON"),
            ("event_date", "DATE"), ("device_id", "STRING"), ("os", "STRING"),
            ("mp_processing_time_ms", "INT64"), ("source", "STRING"))),
}


def _migration_statements(tables: Mapping[tuple[str, str], Schema]) -> Iterator[GateStatement]:
    """``migrate_events_table``'s statements for each old shape: the source counts, the
    de-duplicating copy into ``{table}__migrating`` (its CREATE: see the builder
    statements), the copy's counts, the two renames."""
    from analytics_platform.mixpanel import migrate as MG
    from analytics_platform.resources.warehouse import TableLayout, rename_table_statement

    target = f"{EVENTS}{MG.MIGRATING_SUFFIX}"
    for label, shape in _OLD_EVENTS_SHAPES.items():
        old = TableLayout(shape)
        schema = MG.target_schema(old)
        fragments = MG.copy_fragments(old, schema)
        catalog = dict(tables)
        catalog[(MIXPANEL_DS, EVENTS)] = shape
        catalog[(MIXPANEL_DS, target)] = schema_of(schema)
        ids = dict(dataset=MIXPANEL_DS, table=EVENTS, target=target)
        for name in ("mixpanel/migrate_source_counts", "mixpanel/migrate_copy_events", "mixpanel/migrate_target_counts"):
            yield GateStatement(f"{name}[{label}]", _file(name, fragments, **ids), bound_types(params_of(name)), catalog)
    yield GateStatement("migrate rename", rename_table_statement(MIXPANEL_DS, EVENTS, f"{EVENTS}__before_migration_x"),
                        {}, tables)


# Shapes of PostHog's sessions export the sessions MERGE is built for.
_EXPORT_VARIANTS: dict[str, Optional[Schema]] = {
    "no export": None,
    "declared export": (),  # POSTHOG_SESSIONS_SCHEMA as declared
    "export without timestamps": ("-start_timestamp", "-end_timestamp"),
    "export with every carried column and a new entry_utm_": ("+all", "+entry_utm_id"),
}


def _export_schema(variant: Optional[Sequence[str]]) -> Optional[Schema]:
    from analytics_platform.posthog import rules as sessions_sql, tables as posthog

    if variant is None:
        return None
    cols = list(schema_of(posthog.POSTHOG_SESSIONS_SCHEMA))
    for change in variant:
        if change == "+all":
            have = {c for c, _ in cols}
            cols += [(n, t) for n, t in sessions_sql.CARRY_COLUMNS.items() if n not in have]
        elif change.startswith("+"):
            cols.append((change[1:], "STRING"))
        else:
            cols = [c for c in cols if c[0] != change[1:]]
    return tuple(cols)


def _sessions_merge_statements() -> Iterator[GateStatement]:
    """``build_sessions_merge_sql`` for each export shape, against the sessions table the
    run ensures (``sessions_schema(plan)``)."""
    from analytics_platform.posthog import rules as sessions_sql, store as posthog_store, tables as posthog

    params = bound_types(params_of("posthog/sessions_merge"))
    for label, variant in _EXPORT_VARIANTS.items():
        export = _export_schema(variant)
        tables = base_tables()
        if export is None:
            tables.pop((POSTHOG_DS, "sessions"))
        else:
            tables[(POSTHOG_DS, "sessions")] = export
        plan = sessions_sql.plan_carry([c for c, _ in export] if export else [])
        tables[(AGG_DS, posthog.SESSIONS_TABLE)] = schema_of(posthog.sessions_schema(plan))
        sql = posthog_store.build_sessions_merge_sql(
            plan, posthog_dataset=POSTHOG_DS, firebase_dataset=FIREBASE_DS, out_dataset=AGG_DS
        )
        yield GateStatement(f"posthog/sessions_merge[{label}]", sql, params, tables)
        if export is None or label.startswith("export with every"):
            string_sql = posthog_store.build_sessions_merge_sql(
                plan, posthog_dataset=POSTHOG_DS, firebase_dataset=FIREBASE_DS, out_dataset=AGG_DS,
                properties_type="STRING",
            )
            yield GateStatement(f"posthog/sessions_merge[{label}, properties STRING]", string_sql, params,
                                _string_properties(tables))


def _string_properties(tables: Mapping[tuple[str, str], Schema]) -> dict[tuple[str, str], Schema]:
    """PostHog's events export with ``properties`` as STRING holding JSON (the other
    shape the source declares)."""
    out = dict(tables)
    out[(POSTHOG_DS, "events")] = tuple(
        (c, "STRING" if c == "properties" else t) for c, t in out[(POSTHOG_DS, "events")]
    )
    return out


def _rows_sql_statements() -> Iterator[GateStatement]:
    from analytics_platform.mixpanel import store as anomalies

    sql = anomalies.rows_sql(MIXPANEL_DS, EVENTS, "it's \"odd\" \\ name", NOW, NOW + dt.timedelta(minutes=5))
    yield GateStatement("mixpanel/select_window_rows", sql, {}, base_tables())


# =========================================================================================
# Statements: what BigQueryWarehouse builds (DDL and loads), recorded
# =========================================================================================
_SAMPLE = {
    "STRING": "x", "INT64": 1, "FLOAT64": 1.5, "BOOL": True, "TIMESTAMP": NOW, "DATE": DAY,
    "JSON": '{"a": 1}', "NUMERIC": Decimal("1.5"), "BYTES": b"x",
}


@dataclass(frozen=True)
class TableUse:
    """A table as the code creates it and the loads the code makes into it."""

    key: str  # key of base_tables' schemas, or a label for the posthog sessions variants
    dataset: str
    table: str
    schema: tuple  # Column declarations
    partition_by: Optional[str] = None
    cluster_by: tuple[str, ...] = ()
    loads: tuple[dict, ...] = field(default_factory=tuple)  # Warehouse.load keyword arguments


def _table_uses() -> list[TableUse]:
    """Every ``ensure_table`` and ``warehouse.load`` of the code (module -> call)."""
    from analytics_platform.cohorts import tables as C
    from analytics_platform.mixpanel import tables as M
    from analytics_platform.posthog import rules as sessions_sql, tables as P

    from analytics_platform.resources.warehouse import write_lock as WL

    ts_range = {"match_from": NOW, "match_to": NOW}
    from analytics_platform.mixpanel.store import MATCH_WINDOW_STARTS
    export_all = _export_schema(("+all", "+entry_utm_id"))
    return [
        # mixpanel/tables.py ensure_*_table; mixpanel/store.py loads
        TableUse("mixpanel.events", MIXPANEL_DS, EVENTS, M.EVENTS_SCHEMA, "event_date", ("event_name", "event_id")),
        TableUse("mixpanel.staged_batch", MIXPANEL_DS, STAGED_BATCH, M.EVENTS_SCHEMA,
                 loads=({"mode": "append"},)),
        # mixpanel/migrate.py: the table an old events table is copied into
        TableUse("mixpanel.events", MIXPANEL_DS, f"{EVENTS}__migrating", M.EVENTS_SCHEMA, "event_date",
                 ("event_name", "event_id")),
        # resources/warehouse/write_lock.py: the table of Warehouse.write_batch's locks
        TableUse("warehouse.write_locks", MIXPANEL_DS, WL.WRITE_LOCKS_TABLE, WL.WRITE_LOCKS_SCHEMA),
        TableUse("mixpanel.rejected", MIXPANEL_DS, M.REJECTED_TABLE, M.REJECTED_SCHEMA, "partition_date",
                 loads=({"mode": "insert_missing", "key_columns": ("partition_date", "line_hash"),
                         "match_filter": "T.partition_date BETWEEN @match_from AND @match_to",
                         "match_params": {"match_from": DAY, "match_to": DAY}},
                        # the warehouse's other partition modes, on a DATE-partitioned table
                        {"mode": "replace_partitions", "partition_column": "partition_date"},
                        {"mode": "replace_partitions", "partition_column": "partition_date",
                         "partition_values": [DAY], "empty": True},
                        {"mode": "merge", "key_columns": ("partition_date", "line_hash"),
                         "preserve_on_update": ("seen_at",)})),
        TableUse("mixpanel.anomalies", MIXPANEL_DS, M.ANOMALIES_TABLE, M.ANOMALIES_SCHEMA, "DATE(window_start)",
                 ("event_name",),
                 loads=({"mode": "insert_missing", "key_columns": ("event_name", "window_start"),
                         "match_filter": MATCH_WINDOW_STARTS,
                         "match_params": ts_range},
                        {"mode": "merge", "key_columns": ("event_name", "window_start"),
                         "preserve_on_update": ("detected_at",),
                         "match_filter": MATCH_WINDOW_STARTS,
                         "match_params": ts_range})),
        # mixpanel/store.py write_export_log
        TableUse("mixpanel.export_log", MIXPANEL_DS, M.EXPORT_LOG_TABLE, M.EXPORT_LOG_SCHEMA, "day",
                 loads=({"mode": "insert_missing", "key_columns": ("day", "run_id", "export_query_time"),
                         "match_filter": "T.day BETWEEN @match_from AND @match_to",
                         "match_params": {"match_from": DAY, "match_to": DAY}},)),
        # cohorts/store.py
        TableUse("cohorts.temp_users", COHORT_DS, C.TEMP_USERS_TABLE, C.TEMP_USERS_SCHEMA,
                 loads=({"mode": "insert_missing", "key_columns": ("distinct_id",)},)),
        TableUse("cohorts.removed", COHORT_DS, C.REMOVED_TABLE, C.REMOVED_SCHEMA,
                 loads=({"mode": "insert_missing", "key_columns": ("distinct_id",)},)),
        TableUse("cohorts.audit", COHORT_DS, C.AUDIT_TABLE, C.AUDIT_SCHEMA),
        # posthog/assets.py
        TableUse("posthog.sessions[no export]", AGG_DS, P.SESSIONS_TABLE,
                 tuple(P.sessions_schema(sessions_sql.plan_carry([]))), "session_date", ("distinct_id",)),
        TableUse("posthog.sessions[export with every carried column]", AGG_DS, P.SESSIONS_TABLE,
                 tuple(P.sessions_schema(sessions_sql.plan_carry([c for c, _ in export_all]))),
                 "session_date", ("distinct_id",)),
        TableUse("posthog.persons", AGG_DS, P.PERSONS_TABLE, tuple(P.PERSONS_SCHEMA), cluster_by=("distinct_id",)),
        # demo/posthog.py: the source tables, loaded by the demo seed
        TableUse("posthog.events", POSTHOG_DS, P.EVENTS_TABLE, tuple(P.POSTHOG_EVENTS_SCHEMA), loads=({"mode": "append"},)),
        TableUse("posthog.sessions_export", POSTHOG_DS, "sessions", tuple(P.POSTHOG_SESSIONS_SCHEMA),
                 loads=({"mode": "append"},)),
        TableUse("firebase.users", FIREBASE_DS, P.USERS_TABLE, tuple(P.FIREBASE_USERS_SCHEMA), loads=({"mode": "append"},)),
        TableUse("firebase.events", FIREBASE_DS, P.EVENTS_TABLE, tuple(P.FIREBASE_EVENTS_SCHEMA), loads=({"mode": "append"},)),
        *_engagement_table_uses(),
    ]


def _recorded(action: Callable[[Any], None], existing: Mapping[tuple[str, str], Schema]) -> list[tuple[str, dict, dict]]:
    _, recorder_class = _warehouse_adapter()
    recorder = recorder_class(project="gate-project").setup(existing)
    action(recorder)
    return recorder._gate_log


def _builder_statements() -> Iterator[GateStatement]:
    import pandas as pd

    for use in _table_uses():
        others = {k: v for k, v in base_tables().items() if k != (use.dataset, use.table)}
        label = f"{use.key} {use.dataset}.{use.table}"
        # CREATE TABLE (the table is missing)
        created = _recorded(
            lambda w: w.ensure_table(use.dataset, use.table, use.schema, use.partition_by, use.cluster_by), others
        )
        for sql, params, tables in created:
            yield GateStatement(f"create {label}", sql, bound_types(params), tables)
        # ALTER TABLE ADD COLUMN (the table exists without its last column)
        short = dict(others)
        short[(use.dataset, use.table)] = schema_of(use.schema)[:-1]
        for sql, params, tables in _recorded(
            lambda w: w.ensure_table(use.dataset, use.table, use.schema, use.partition_by, use.cluster_by), short
        ):
            yield GateStatement(f"alter {label}", sql, bound_types(params), tables)
        # loads into the existing table
        full = dict(others)
        full[(use.dataset, use.table)] = schema_of(use.schema)
        row = {c.name: _SAMPLE[c.type] for c in use.schema}
        for load in use.loads:
            kwargs = {k: v for k, v in load.items() if k != "empty"}
            data = pd.DataFrame([row]).iloc[0:0] if load.get("empty") else pd.DataFrame([row])
            for i, (sql, params, tables) in enumerate(_recorded(
                lambda w: w.load(data, use.dataset, use.table, use.schema, **kwargs), full
            )):
                what = load["mode"] + (" (no rows)" if load.get("empty") else "")
                yield GateStatement(f"load {what} #{i + 1} {label}", sql, bound_types(params), tables)


def all_statements() -> list[GateStatement]:
    """Every BigQuery statement of the gate."""
    return [*_sql_file_statements(), *_rows_sql_statements(), *_builder_statements()]


# Files that are fragments of another statement (covered through it).
FRAGMENT_OF = {
    "cohorts/prune_privacy_days": "cohorts/detect_temp_users",
    "cohorts/prune_restore_days": "cohorts/detect_temp_users",
    "cohorts/prune_active_day": "cohorts/active_yesterday",
    "cohorts/prune_recent_days": "cohorts/select_events_loaded_until",
    "posthog/sessions_export_cte": "posthog/sessions_merge",
    "posthog/filter_export_window": "posthog/sessions_merge",
    "posthog/select_no_export": "posthog/sessions_merge",
    "posthog/properties_from_json": "posthog/sessions_merge",
    "posthog/persons_map_export": "posthog/persons_rebuild",
    "posthog/persons_map_none": "posthog/persons_rebuild",
    "posthog/properties_from_string": "posthog/sessions_merge",
    "mixpanel/match_window_starts": "load merge #1 mixpanel.anomalies mixpanel_data.event_anomalies",
}
WAREHOUSE_SQL_DOMAINS = ("mixpanel", "cohorts", "posthog", "ops", "engagement")


def uncovered_sql_files(statements: Sequence[GateStatement]) -> list[str]:
    """Warehouse SQL files (``dom/name``) no gate statement renders."""
    from analytics_platform.common import SQL_DIR

    ids = {s.id.split("[")[0] for s in statements}
    missing = []
    for domain in WAREHOUSE_SQL_DOMAINS:
        for path in sorted((SQL_DIR / domain).glob("*.sql")):
            name = f"{domain}/{path.stem}"
            if name not in ids and FRAGMENT_OF.get(name) not in ids:
                missing.append(name)
    return missing


# =========================================================================================
# engagement (engagement/store.py, engagement/tables.py): the Firestore mirror, the
# aggregates, and the goal batch staged by insert_from_batch
# =========================================================================================
ENGAGEMENT_DS = "engagement"
STAGED_GOALS = "_goal_batch_0123456789ab"


def _engagement_schemas() -> dict[str, Schema]:
    from analytics_platform.engagement import tables as E

    return {
        "engagement.events": schema_of(E.EVENTS_SCHEMA),
        "engagement.rejects": schema_of(E.REJECTS_SCHEMA),
        "engagement.cursors": schema_of(E.CURSORS_SCHEMA),
        "engagement.aggregates": schema_of(E.AGGREGATES_SCHEMA),
    }


def _engagement_table_names() -> dict[str, tuple[str, str]]:
    from analytics_platform.engagement import tables as E

    return {
        "engagement.events": (ENGAGEMENT_DS, E.EVENTS_TABLE),
        "engagement.rejects": (ENGAGEMENT_DS, E.REJECTS_TABLE),
        "engagement.cursors": (ENGAGEMENT_DS, E.CURSORS_TABLE),
        "engagement.aggregates": (ENGAGEMENT_DS, E.AGGREGATES_TABLE),
    }


def _engagement_params() -> dict[str, dict[str, Any]]:
    """The parameter builders of engagement/store.py (full partition and user_ids mode)."""
    from analytics_platform.engagement import store

    return {
        "engagement/user_aggregates": store.aggregation_params(NOW, DAY, NOW, None),
        "engagement/delete_aggregates": store.user_params(DAY, None),
        "engagement/select_aggregates": store.user_params(DAY, ["u1"]),
        "engagement/existing_events": store.paths_param(["a/u/events/e"]),
        "engagement/existing_rejects": store.paths_param(["a/u/events/e"]),
        "engagement/delete_events_by_path": store.paths_param(["a/u/events/e"]),
        "engagement/delete_rejects_by_path": store.paths_param(["a/u/events/e"]),
        "engagement/select_cursor": store.source_param("firestore:p:app_usage_events/*/events"),
        "engagement/table_row_count": {},
    }


def _engagement_statements(tables, stmt) -> Iterator[GateStatement]:
    from analytics_platform.engagement import store, tables as E

    ids = dict(dataset=ENGAGEMENT_DS)
    for name in ("delete_aggregates", "select_aggregates", "existing_events", "existing_rejects",
                 "delete_events_by_path", "delete_rejects_by_path", "select_cursor"):
        yield stmt(f"engagement/{name}", f"engagement/{name}", _file(f"engagement/{name}", **ids))
    for table in (E.EVENTS_TABLE, E.REJECTS_TABLE, E.AGGREGATES_TABLE):
        yield stmt(f"engagement/table_row_count[{table}]", "engagement/table_row_count",
                   _file("engagement/table_row_count", **ids, table=table))
    staged = dict(tables)
    staged[(ENGAGEMENT_DS, STAGED_GOALS)] = schema_of(E.GOALS_BATCH_SCHEMA)
    aggregate_sql = _file("engagement/user_aggregates", **ids, batch_dataset=ENGAGEMENT_DS, batch=STAGED_GOALS)
    yield stmt("engagement/user_aggregates", "engagement/user_aggregates", aggregate_sql, staged)
    users_mode = store.aggregation_params(NOW, DAY, NOW, ["u1", "u2"])
    yield GateStatement("engagement/user_aggregates[user_ids]", aggregate_sql, bound_types(users_mode), staged)


def _engagement_table_uses() -> list["TableUse"]:
    from analytics_platform.engagement import tables as E

    return [
        TableUse("engagement.events", ENGAGEMENT_DS, E.EVENTS_TABLE, tuple(E.EVENTS_SCHEMA), E.EVENTS_PARTITION_BY,
                 E.EVENTS_CLUSTER_BY,
                 loads=({"mode": "merge", "key_columns": ("document_path",)},
                        {"mode": "append"})),  # append: the one-off move and the tests
        TableUse("engagement.rejects", ENGAGEMENT_DS, E.REJECTS_TABLE, tuple(E.REJECTS_SCHEMA),
                 loads=({"mode": "merge", "key_columns": ("document_path",), "preserve_on_update": ("first_seen_at",)},)),
        TableUse("engagement.cursors", ENGAGEMENT_DS, E.CURSORS_TABLE, tuple(E.CURSORS_SCHEMA),
                 loads=({"mode": "merge", "key_columns": ("source",)},)),
        TableUse("engagement.aggregates", ENGAGEMENT_DS, E.AGGREGATES_TABLE, tuple(E.AGGREGATES_SCHEMA),
                 E.AGGREGATES_PARTITION_BY, E.AGGREGATES_CLUSTER_BY,
                 loads=({"mode": "append"},)),  # the one-off move
    ]
