"""BigQuery SQL gate: every BigQuery statement the code can send must resolve and type-check
under Google's ZetaSQL analyzer with BigQuery's language options (the emulator runs on
DuckDB, so nothing else checks BigQuery's own rules).  See
``analytics_platform_tests/bigquery_gate.py`` for what is gathered, the catalog and how
parameters are typed, and ``bigquery_analyzer.py`` for the analyzer and its options.

A statement that fails here would fail on BigQuery: fix the SQL (or, for a known case,
add it to ``KNOWN_FAILURES`` with the reason; it then shows as xfail, never silently).
"""

from __future__ import annotations

import re

import pytest

from analytics_platform_tests import bigquery_gate as gate_lib
from analytics_platform_tests.bigquery_analyzer import BigQueryGate, ZetaSQLError

STATEMENTS = gate_lib.all_statements()

# statement id -> reason (the statement is kept in the gate as xfail(strict=True)).
KNOWN_FAILURES: dict[str, str] = {}


@pytest.fixture(scope="module")
def gate() -> BigQueryGate:
    return BigQueryGate()


def _cases():
    for s in STATEMENTS:
        marks = [pytest.mark.xfail(reason=KNOWN_FAILURES[s.id], strict=True)] if s.id in KNOWN_FAILURES else []
        yield pytest.param(s, id=s.id, marks=marks)


@pytest.mark.parametrize("statement", _cases())
def test_statement_passes_bigquery_analysis(gate: BigQueryGate, statement: gate_lib.GateStatement) -> None:
    try:
        gate.check(statement)
    except ZetaSQLError as exc:
        pytest.fail(f"ZetaSQL (BigQuery options) rejects {statement.id}: {exc}\n--- SQL ---\n{statement.sql}")


def test_every_warehouse_sql_file_is_gated() -> None:
    assert gate_lib.uncovered_sql_files(STATEMENTS) == []


def test_gate_covers_every_kind_of_builder_statement() -> None:
    built = [s.sql for s in STATEMENTS if s.id.split(" ")[0] in ("create", "alter", "load")]
    heads = {" ".join(sql.split()[:2]) for sql in built}
    assert {"CREATE TABLE", "ALTER TABLE", "MERGE `mixpanel_data.event_anomalies`", "INSERT INTO",
            "DELETE FROM", "CREATE OR"} <= heads
    creates = [s.sql for s in STATEMENTS if s.sql.startswith("CREATE TABLE")]
    assert any(" PARTITION BY " in sql and " CLUSTER BY " in sql for sql in creates)


def test_every_bound_parameter_is_used() -> None:
    """The parameter dicts of the gate mirror the code: a name the SQL never uses means
    the gate (or the code) drifted from the SQL file."""
    used: dict[str, set[str]] = {}
    bound: dict[str, set[str]] = {}
    for s in STATEMENTS:
        if "/" not in s.id.split(" ")[0]:
            continue
        base = s.id.split("[")[0]
        used.setdefault(base, set()).update(re.findall(r"@(\w+)", _code_only(s.sql)))
        bound.setdefault(base, set()).update(s.params)
    unused = {k: sorted(bound[k] - used[k]) for k in bound if bound[k] - used[k]}
    assert unused == {}


def test_gate_params_match_the_call_sites() -> None:
    """Where the code passes a SQL file's parameters as a dict literal, the gate binds the
    same names (types: the gate's values mirror the call site's)."""
    sites = gate_lib.call_site_params()
    assert sites, "no call site found: the scan is broken"
    drift = [
        f"{where}: {name} binds {sorted(keys)}, the gate {sorted(gate_lib.params_of(name))}"
        for name, calls in sites.items()
        for where, keys in calls
        if keys != set(gate_lib.params_of(name))
    ]
    assert drift == []


def _code_only(sql: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.S)


# --- the gate works: BigQuery SQL passes, anything else is rejected ----------------------
EV = "`mixpanel_data.mixpanel_events`"

ACCEPTED = {
    "QUALIFY": f"SELECT event_id FROM {EV} WHERE TRUE QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY event_timestamp) = 1",
    "JSON type and functions": f"SELECT JSON_VALUE(properties, '$.a'), PARSE_JSON('{{}}'), TO_JSON_STRING(properties) FROM {EV}",
    "PIVOT": f"SELECT * FROM (SELECT os, event_name FROM {EV}) PIVOT (COUNT(*) FOR os IN ('ios', 'android'))",
    "SAFE. prefix": f"SELECT SAFE.PARSE_DATE('%Y%m%d', os), SAFE_CAST(os AS INT64) FROM {EV}",
    "GROUP BY ALL": f"SELECT os, COUNT(*) AS n FROM {EV} GROUP BY ALL",
    "unquoted dataset.table": "SELECT COUNT(*) FROM mixpanel_data.mixpanel_events",
    "CREATE TABLE PARTITION BY / CLUSTER BY / OPTIONS": (
        "CREATE TABLE IF NOT EXISTS `d.t` (`a` STRING NOT NULL, `ts` TIMESTAMP, `j` JSON) "
        "PARTITION BY DATE(ts) CLUSTER BY `a` OPTIONS (description = 'x', partition_expiration_days = 3)"
    ),
    "MERGE ... NOT MATCHED BY SOURCE": (
        f"MERGE {EV} T USING (SELECT 'a' AS event_id) S ON FALSE "
        "WHEN NOT MATCHED BY SOURCE AND T.event_date IN UNNEST(@days) THEN DELETE "
        "WHEN NOT MATCHED BY TARGET THEN INSERT (event_id) VALUES (S.event_id)"
    ),
}

REJECTED = {
    # (statement, expected words of ZetaSQL's message)
    "DuckDB function epoch_ms": (f"SELECT epoch_ms(event_timestamp) FROM {EV}", "Function not found"),
    "DuckDB function json_extract_string": (f"SELECT json_extract_string(properties, '$.a') FROM {EV}", "Function not found"),
    "DuckDB date_trunc('day', ts)": (f"SELECT date_trunc('day', event_timestamp) FROM {EV}", "date part"),
    "DuckDB :: cast": (f"SELECT event_id::VARCHAR FROM {EV}", "Syntax error"),
    "DuckDB ILIKE": (f"SELECT 1 FROM {EV} WHERE os ILIKE 'a%'", "Syntax error"),
    "aggregate FILTER clause": (f"SELECT COUNT(*) FILTER (WHERE os = 'ios') FROM {EV}", "Syntax error"),
    "JSON equality": (f"SELECT 1 FROM {EV} WHERE properties = properties", "JSON"),
    "wrong column": (f"SELECT event_ts FROM {EV}", "Unrecognized name: event_ts"),
    "wrong table": ("SELECT 1 FROM `mixpanel_data.no_such_table`", "Table not found"),
    "type error DATE = TIMESTAMP parameter": (f"SELECT 1 FROM {EV} WHERE event_date = @ts", "No matching signature"),
    "type error TIMESTAMP + INT64": (f"SELECT event_timestamp + 1 FROM {EV}", "No matching signature"),
    "unbound parameter": (f"SELECT 1 FROM {EV} WHERE event_date = @nope", "Query parameter 'nope' not found"),
    "non-BigQuery type INT32": ("CREATE TABLE `d.t` (x INT32)", "Type not found"),
    "PARTITION BY a STRING column": ("CREATE TABLE IF NOT EXISTS `d.t` (`a` STRING) PARTITION BY a", "PARTITION BY"),
    "CLUSTER BY a JSON column": ("CREATE TABLE IF NOT EXISTS `d.t` (`a` JSON) CLUSTER BY `a`", "groupable"),
}


@pytest.mark.parametrize("sql", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_gate_accepts_bigquery_features(gate: BigQueryGate, sql: str) -> None:
    gate.check(gate_lib.GateStatement("probe", sql, {"days": "ARRAY<DATE>"}, gate_lib.base_tables()))


@pytest.mark.parametrize("sql, expected", REJECTED.values(), ids=REJECTED.keys())
def test_gate_rejects_wrong_statements(gate: BigQueryGate, sql: str, expected: str) -> None:
    with pytest.raises(ZetaSQLError, match=re.escape(expected)):
        gate.check(gate_lib.GateStatement("probe", sql, {"ts": "TIMESTAMP"}, gate_lib.base_tables()))


def _statement(id_: str) -> gate_lib.GateStatement:
    return next(s for s in STATEMENTS if s.id == id_)


def test_gate_rejects_a_broken_real_file(gate: BigQueryGate) -> None:
    """A real statement of the gate, broken the ways a port from DuckDB breaks it."""
    real = _statement("mixpanel/window_counts")
    gate.check(real)
    broken = [
        real.sql.replace("UNIX_MICROS(event_timestamp)", "epoch_us(event_timestamp)"),  # DuckDB-only
        real.sql.replace("event_name IN UNNEST(@events)", "event_name = ANY(@events)"),  # Postgres/DuckDB
        real.sql.replace("WHERE event_date BETWEEN", "WHERE event_day BETWEEN"),  # wrong column
    ]
    for sql in broken:
        assert sql != real.sql
        with pytest.raises(ZetaSQLError):
            gate.check(gate_lib.GateStatement(real.id, sql, real.params, real.tables))
    # a parameter bound with the wrong type (a STRING where the code binds an ARRAY)
    wrong_params = dict(real.params, events="STRING")
    with pytest.raises(ZetaSQLError, match="UNNEST"):
        gate.check(gate_lib.GateStatement(real.id, real.sql, wrong_params, real.tables))


def test_gate_rejects_a_load_statement_on_a_drifted_schema(gate: BigQueryGate) -> None:
    """The load MERGE built by the warehouse fails when the target lacks a column."""
    merge = next(s for s in STATEMENTS if s.id.startswith("load merge") and s.sql.startswith("MERGE"))
    gate.check(merge)
    target = re.match(r"MERGE `(\w+)\.(\w+)`", merge.sql).groups()
    tables = dict(merge.tables)
    tables[target] = tables[target][:-1]
    with pytest.raises(ZetaSQLError, match="not found|Unrecognized name|Column"):
        gate.check(gate_lib.GateStatement(merge.id, merge.sql, merge.params, tables))


def test_language_options_are_bigquerys(gate: BigQueryGate) -> None:
    features = gate.features()
    assert {"FEATURE_JSON_TYPE", "FEATURE_QUALIFY", "FEATURE_PIVOT", "FEATURE_SAFE_FUNCTION_CALL",
            "FEATURE_GROUP_BY_ALL", "FEATURE_CREATE_TABLE_PARTITION_BY", "FEATURE_CREATE_TABLE_CLUSTER_BY",
            "FEATURE_NUMERIC_TYPE"} <= features
    assert not features & {"FEATURE_AGGREGATE_FILTERING", "FEATURE_JSON_TYPE_COMPARISON", "FEATURE_DML_RETURNING"}
