"""Warehouse side of the PostHog + Firebase session and person aggregates.

Every statement is a file under ``sql/posthog/`` run through the ``Warehouse`` resource
(BigQuery in production, DuckDB locally).  ``build_sessions_merge_sql`` assembles the
sessions MERGE from its files (identifiers validated, values bound); ``rebuild_sessions``
and ``rebuild_persons`` do one asset's work each and return a result with ``.metadata()``,
so the assets stay thin.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import dagster as dg

from analytics_platform.common import (
    contiguous_day_ranges,
    read_sql,
    render_sql,
    to_int,
    utc_now,
    validate_identifier,
)
from analytics_platform.posthog import rules
from analytics_platform.posthog.tables import (
    EVENTS_TABLE,
    PERSONS_EXPORT_TABLE,
    PERSONS_SCHEMA,
    PERSONS_TABLE,
    SESSIONS_TABLE,
    USERS_TABLE,
    sessions_schema,
)
from analytics_platform.settings import Settings

_LOG = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# the sessions MERGE
# ---------------------------------------------------------------------------------------
def _q(name: str) -> str:
    return f"`{validate_identifier(name)}`"


def _export_cte(plan: rules.CarryPlan, posthog_dataset: str) -> str:
    """The ``export_cte`` fragment: the carried columns of PostHog's sessions export, one
    row per session (or no row when the export is absent or carries nothing)."""
    if not (plan.export_exists and plan.present):
        return read_sql("posthog/select_no_export")
    export_filter = ""
    if plan.has_start_timestamp:  # prune the export to the run's window
        export_filter = render_sql(read_sql("posthog/filter_export_window"), start_column=plan.start_timestamp_name)
    return render_sql(
        read_sql("posthog/sessions_export_cte"),
        fragments={
            "export_columns": "".join(f", {_q(name)}" for name, _, _ in plan.present),
            "export_casts": "".join(
                f"SAFE_CAST({_q(source)} AS {typ}) AS {_q(name)},\n        " for name, typ, source in plan.present
            ),
            "export_order": f"{_q(plan.end_timestamp_name)} DESC" if plan.has_end_timestamp else "session_id",
            "export_filter": export_filter,
        },
        posthog_dataset=posthog_dataset,
    )


def properties_fragment(properties_type: str) -> str:
    """How the events' ``properties`` is read as JSON: a JSON column as is, a STRING column
    parsed with ``SAFE.PARSE_JSON`` (malformed text -> NULL, counted, never an error)."""
    kind = "json" if str(properties_type).upper() == "JSON" else "string"
    return read_sql(f"posthog/properties_from_{kind}")


def _carry_expr(name: str, typ: str, present: set[str]) -> str:
    computed = rules.COMPUTED_FROM_EVENTS.get(name)
    if name in present and computed:
        return f", COALESCE(x.{_q(name)}, {computed}) AS {_q(name)}"
    if name in present:
        return f", x.{_q(name)} AS {_q(name)}"
    if computed:
        return f", {computed} AS {_q(name)}"
    return f", CAST(NULL AS {typ}) AS {_q(name)}"


def build_sessions_merge_sql(
    plan: rules.CarryPlan,
    *,
    posthog_dataset: str,
    firebase_dataset: str,
    out_dataset: str,
    properties_type: str = "JSON",
) -> str:
    """The BigQuery-dialect MERGE that rebuilds the sessions of a day range
    (``sql/posthog/sessions_merge.sql`` with its fragments); ``properties_type`` is the
    events' ``properties`` column type (JSON or STRING)."""
    present = {name for name, _, _ in plan.present} if plan.export_exists and plan.present else set()
    carry_select = [_carry_expr(name, typ, present) for name, typ in plan.columns]
    return render_sql(
        read_sql("posthog/sessions_merge"),
        fragments={
            "properties_json": properties_fragment(properties_type),
            "export_cte": _export_cte(plan, posthog_dataset),
            "carry_select": "\n    ".join(carry_select),
            "carry_insert": "".join(f", {_q(n)}" for n, _ in plan.columns),
            "carry_values": "".join(f", S.{_q(n)}" for n, _ in plan.columns),
        },
        posthog_dataset=posthog_dataset,
        firebase_dataset=firebase_dataset,
        out_dataset=out_dataset,
    )


# ---------------------------------------------------------------------------------------
# posthog_aggregated/sessions
# ---------------------------------------------------------------------------------------
def require_sources(warehouse: Any, settings: Settings) -> None:
    """Fail with the missing source tables and the settings that name them."""
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


@dataclass(frozen=True)
class SessionsRun:
    """What one sessions run wrote: per-day event counts and per-day table statistics
    (``sessions_event_stats.sql`` / ``sessions_partition_stats.sql`` rows)."""

    keys: list[str]
    plan: rules.CarryPlan
    event_names: dict[str, str]
    table: str
    rows_affected: int
    events_by_day: dict[str, dict[str, Any]]
    stats_rows: list[dict[str, Any]]
    table_stats: dict[str, Any] = None  # sessions_table_stats.sql row (table-wide)
    properties_type: str = "JSON"

    def total(self, col: str) -> int:
        return sum(to_int(r.get(col)) for r in self.stats_rows)

    def days_failing(self, col: str) -> list[str]:
        return sorted(str(r["session_date"])[:10] for r in self.stats_rows if to_int(r.get(col)) > 0)

    def events_total(self, col: str) -> int:
        return sum(to_int(r.get(col)) for r in self.events_by_day.values())

    @property
    def events_without_session_id(self) -> int:
        return self.events_total("events_without_session_id")

    @property
    def duplicate_session_ids_table_wide(self) -> int:
        return to_int((self.table_stats or {}).get("duplicate_session_ids"))

    @functools.cached_property
    def stats_by_day(self) -> dict[str, dict[str, Any]]:
        return {str(r["session_date"])[:10]: r for r in self.stats_rows}

    def partition_metadata(self, key: str) -> dict[str, Any]:
        """Each day of a range run gets its own counts."""
        st, ev = self.stats_by_day.get(key, {}), self.events_by_day.get(key, {})
        return {
            "dagster/row_count": to_int(st.get("session_count")),
            "events_in_day": to_int(ev.get("events_in_day")),
            "events_without_session_id": to_int(ev.get("events_without_session_id")),
            "duplicate_event_rows": to_int(ev.get("duplicate_event_rows")),
            "events_with_malformed_properties": to_int(ev.get("events_with_malformed_properties")),
            "events_aggregated": to_int(st.get("events_aggregated")),
            "sessions_without_firebase_user": to_int(st.get("without_firebase_user")),
            "sessions_spanning_midnight": to_int(st.get("spanning_midnight")),
        }

    def metadata(self) -> dict[str, Any]:
        return {
            "run_days": dg.MetadataValue.json([min(self.keys), max(self.keys)]),
            "run_sessions_total": self.total("session_count"),
            "run_events_without_session_id_total": self.events_without_session_id,
            "run_duplicate_event_rows_total": self.events_total("duplicate_event_rows"),
            "run_events_with_malformed_properties_total": self.events_total("events_with_malformed_properties"),
            "properties_type": self.properties_type,
            "session_field_sources": dg.MetadataValue.json(self.plan.field_sources()),
            "rows_affected": self.rows_affected,
            "carried_columns": dg.MetadataValue.json(list(self.plan.present_names)),
            "missing_optional_columns": dg.MetadataValue.json(list(self.plan.missing)),
            "ignored_export_columns": dg.MetadataValue.json(list(self.plan.ignored)),
            "event_names": dg.MetadataValue.json(self.event_names),
            "table": self.table,
            "dagster/table_name": self.table,
        }


def rebuild_sessions(
    warehouse: Any,
    settings: Settings,
    keys: Sequence[str],
    event_names: Mapping[str, str],
    max_session_days: int,
    *,
    log: Any = _LOG,
) -> SessionsRun:
    """Rebuild the sessions of the days ``keys``: one MERGE per contiguous day range, then
    the per-day event counts and table statistics."""
    require_sources(warehouse, settings)
    ph, fb, out = settings.posthog_dataset_id, settings.firebase_dataset_id, settings.posthog_aggregated_dataset_id
    plan = rules.plan_carry(warehouse.table_columns(ph, "sessions"))
    properties_type = warehouse.column_types(ph, EVENTS_TABLE).get("properties", "JSON")
    if not plan.export_exists:
        log.warning(f"{ph}.sessions (PostHog sessions export) not found: its optional columns are NULL.")
    warehouse.ensure_table(
        out, SESSIONS_TABLE, sessions_schema(plan), partition_by="session_date", cluster_by=["distinct_id"]
    )
    sql = build_sessions_merge_sql(
        plan, posthog_dataset=ph, firebase_dataset=fb, out_dataset=out, properties_type=properties_type
    )
    event_stats_sql = render_sql(
        read_sql("posthog/sessions_event_stats"),
        fragments={"properties_json": properties_fragment(properties_type)},
        posthog_dataset=ph,
    )

    loaded_at = utc_now()
    affected = 0
    events_by_day: dict[str, dict[str, Any]] = {}
    stats_rows: list[dict[str, Any]] = []
    for first, last in contiguous_day_ranges(list(keys)):
        window = rules.RunWindow(first, last, max_session_days)
        log.info(
            f"Rebuilding {out}.{SESSIONS_TABLE} for {first}..{last} from events "
            f"[{window.read_start.isoformat()}, {window.read_end.isoformat()})"
        )
        affected += warehouse.execute(sql, window.params(event_names, loaded_at))
        ev = warehouse.query(event_stats_sql, {"range_start": window.range_start, "range_end": window.range_end})
        events_by_day.update({str(r["day"])[:10]: r for r in ev.to_dict("records")})
        st = warehouse.run_file(
            "posthog/sessions_partition_stats", {"first_day": first, "last_day": last}, out_dataset=out
        )
        stats_rows.extend(st.to_dict("records"))
    table_stats = warehouse.run_file("posthog/sessions_table_stats", out_dataset=out).to_dict("records")[0]
    return SessionsRun(
        list(keys), plan, dict(event_names), f"{out}.{SESSIONS_TABLE}", affected, events_by_day, stats_rows,
        table_stats, properties_type,
    )


# ---------------------------------------------------------------------------------------
# posthog_aggregated/persons
# ---------------------------------------------------------------------------------------
# Columns of PostHog's persons export that order a distinct_id's mappings (latest first).
PERSONS_ORDER_COLUMNS = ("person_distinct_id_version", "person_version", "_inserted_at")


def person_map_fragment(persons_columns: Sequence[str], posthog_dataset: str) -> tuple[str, str]:
    """``(person_map fragment of persons_rebuild.sql, what persons are keyed by)``: PostHog's
    persons export when it has ``distinct_id`` and ``person_id`` (``persons_columns``: its
    columns, [] when absent) -> ``person_id``; else no mapping -> ``distinct_id``."""
    by_lower = {c.lower(): c for c in persons_columns}
    if not {"distinct_id", "person_id"} <= set(by_lower):
        return read_sql("posthog/persons_map_none"), "distinct_id"
    order = [f"{_q(by_lower[c])} DESC" for c in PERSONS_ORDER_COLUMNS if c in by_lower]
    order.append("person_id DESC")
    sql = render_sql(
        read_sql("posthog/persons_map_export"),
        fragments={"persons_order": ", ".join(order)},
        posthog_dataset=posthog_dataset,
    )
    return sql, "person_id"


@dataclass(frozen=True)
class PersonsRun:
    """What one persons rebuild wrote (a ``persons_stats.sql`` row)."""

    table: str
    rows_affected: int
    stats: dict[str, Any]
    keyed_by: str = "distinct_id"

    def n(self, col: str) -> int:
        return to_int(self.stats.get(col))

    def metadata(self) -> dict[str, Any]:
        return {
            "dagster/row_count": self.n("person_count"),
            "persons_with_firebase_user": self.n("with_firebase_user"),
            "persons_keyed_by": self.keyed_by,
            "persons_with_several_distinct_ids": self.n("with_several_distinct_ids"),
            "sessions_counted": self.n("sessions_counted"),
            "rows_affected": self.rows_affected,
            "table": self.table,
            "dagster/table_name": self.table,
        }


def rebuild_persons(warehouse: Any, settings: Settings) -> PersonsRun:
    """Replace ``persons`` from ``sessions`` in one MERGE, then read its statistics."""
    out = settings.posthog_aggregated_dataset_id
    # persons reads sessions: make sure it exists (empty) even before the first sessions run
    warehouse.ensure_table(
        out, SESSIONS_TABLE, sessions_schema(rules.plan_carry([])), partition_by="session_date", cluster_by=["distinct_id"]
    )
    warehouse.ensure_table(out, PERSONS_TABLE, PERSONS_SCHEMA, cluster_by=["distinct_id"])
    ph = settings.posthog_dataset_id
    person_map, keyed_by = person_map_fragment(warehouse.table_columns(ph, PERSONS_EXPORT_TABLE), ph)
    sql = render_sql(read_sql("posthog/persons_rebuild"), fragments={"person_map": person_map}, out_dataset=out)
    affected = warehouse.execute(sql, {"loaded_at": utc_now()})
    stats = warehouse.run_file("posthog/persons_stats", out_dataset=out).to_dict("records")[0]
    return PersonsRun(f"{out}.{PERSONS_TABLE}", affected, stats, keyed_by)
