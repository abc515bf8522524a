"""The warehouse contract: the same tests on DuckDB and on the BigQuery API emulator.

Every test takes the parametrized ``warehouse`` fixture (``[duckdb]`` and ``[bigquery]``),
so whatever BigQuery-dialect SQL and load mode the assets rely on behaves the same on the
local engine and on the production client.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pandas as pd
import pytest

from analytics_platform.resources.warehouse import (
    Column,
    LoadResult,
    Param,
    WarehouseError,
    render_sql,
    validate_identifier,
)

DS = "contract"
UTC = dt.timezone.utc

EVENTS = [
    Column("event_date", "DATE", required=True),
    Column("event_id", "STRING", required=True),
    Column("user_id", "STRING"),
    Column("value", "INT64"),
    Column("ts", "TIMESTAMP"),
]

USERS = [
    Column("user_id", "STRING", required=True),
    Column("name", "STRING"),
    Column("score", "INT64"),
    Column("inserted_at", "TIMESTAMP"),
    Column("updated_at", "TIMESTAMP"),
]


def _events(day: str, ids: list[str], value: int = 1, user: str = "u1") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_date": [dt.date.fromisoformat(day)] * len(ids),
            "event_id": ids,
            "user_id": [user] * len(ids),
            "value": [value] * len(ids),
            "ts": [dt.datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC)] * len(ids),
        }
    )


def _rows(warehouse, sql: str, params=None) -> list[tuple]:
    frame = warehouse.query(sql, params)
    return [tuple(_plain(v) for v in row) for row in frame.itertuples(index=False, name=None)]


def _plain(value):
    """Engine-neutral Python values for comparisons."""
    if value is None or (not isinstance(value, (list, dict, str)) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalars
    return value


def _count(warehouse, table: str) -> int:
    return int(warehouse.query(f"SELECT COUNT(*) AS n FROM `{DS}.{table}`")["n"].iloc[0])


# ---------------------------------------------------------------------------------------
# create
# ---------------------------------------------------------------------------------------
def test_ensure_table_creates_is_idempotent_and_adds_missing_columns(warehouse):
    assert not warehouse.table_exists(DS, "events")
    assert warehouse.table_columns(DS, "events") == []

    warehouse.ensure_table(DS, "events", EVENTS, partition_by="event_date", cluster_by=["user_id"])
    assert warehouse.table_columns(DS, "events") == [c.name for c in EVENTS]
    warehouse.load(_events("2024-01-01", ["a", "b"]), DS, "events", EVENTS)

    # idempotent: same schema again changes nothing, keeps the data
    warehouse.ensure_table(DS, "events", EVENTS, partition_by="event_date", cluster_by=["user_id"])
    assert warehouse.table_columns(DS, "events") == [c.name for c in EVENTS]
    assert _count(warehouse, "events") == 2

    # a new column is added (NULL for existing rows), data kept
    wider = EVENTS + [Column("country", "STRING"), Column("props", "JSON")]
    warehouse.ensure_table(DS, "events", wider, partition_by="event_date")
    assert warehouse.table_columns(DS, "events") == [c.name for c in wider]
    assert _rows(warehouse, f"SELECT COUNT(*), COUNTIF(country IS NULL) FROM `{DS}.events`") == [(2, 2)]

    # loading with the wider schema fills the new column
    frame = _events("2024-01-02", ["c"]).assign(country="DE", props=['{"k": 1}'])
    warehouse.load(frame, DS, "events", wider)
    assert _rows(
        warehouse,
        f"SELECT event_id, country, JSON_VALUE(props, '$.k') FROM `{DS}.events` ORDER BY event_id",
    ) == [("a", None, None), ("b", None, None), ("c", "DE", "1")]


# ---------------------------------------------------------------------------------------
# append
# ---------------------------------------------------------------------------------------
def test_append_inserts_every_row(warehouse):
    first = warehouse.load(_events("2024-01-01", ["a", "b", "c"]), DS, "events", EVENTS, mode="append")
    assert first == LoadResult(rows_staged=3, rows_affected=3)
    second = warehouse.load(_events("2024-01-01", ["a"]), DS, "events", EVENTS)  # default: append
    assert second.rows_affected == 1
    assert _rows(
        warehouse, f"SELECT event_id, COUNT(*) FROM `{DS}.events` GROUP BY event_id ORDER BY event_id"
    ) == [("a", 2), ("b", 1), ("c", 1)]


def test_load_accepts_arrow_and_missing_columns_become_null(warehouse):
    import pyarrow as pa

    table = pa.table({"event_date": [dt.date(2024, 1, 1)], "event_id": ["x"]})
    result = warehouse.load(table, DS, "events", EVENTS)
    assert result.rows_affected == 1
    assert _rows(warehouse, f"SELECT event_id, user_id, value, ts FROM `{DS}.events`") == [
        ("x", None, None, None)
    ]


def test_empty_load_creates_the_table_and_changes_nothing(warehouse):
    empty = _events("2024-01-01", [])
    for mode, kwargs in [
        ("append", {}),
        ("merge", {"key_columns": ["event_id"]}),
        ("insert_missing", {"key_columns": ["event_id"]}),
        ("replace_partitions", {"partition_column": "event_date", "partition_values": []}),
    ]:
        result = warehouse.load(empty, DS, "events", EVENTS, mode=mode, **kwargs)
        assert result.rows_staged == 0 and result.rows_affected == 0, mode
    assert warehouse.table_exists(DS, "events")
    assert _count(warehouse, "events") == 0


# ---------------------------------------------------------------------------------------
# replace_partitions
# ---------------------------------------------------------------------------------------
def test_replace_partitions_replaces_only_the_named_partitions(warehouse):
    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        warehouse.load(_events(day, [f"{day}-1", f"{day}-2"], value=1), DS, "events", EVENTS)

    new = pd.concat([_events("2024-01-02", ["n1", "n2", "n3"], value=2)])
    result = warehouse.load(
        new, DS, "events", EVENTS, mode="replace_partitions",
        partition_column="event_date",
        # the 4th is named but gets no rows (stays empty); strings are accepted for DATE
        partition_values=["2024-01-02", dt.date(2024, 1, 4)],
    )
    assert result.rows_staged == 3
    assert result.rows_affected == 5  # 2 deleted + 3 inserted

    got = _rows(
        warehouse,
        f"SELECT CAST(event_date AS STRING), COUNT(*), SUM(value) FROM `{DS}.events` "
        "GROUP BY 1 ORDER BY 1",
    )
    assert got == [("2024-01-01", 2, 2), ("2024-01-02", 3, 6), ("2024-01-03", 2, 2)]

    # re-running the same replacement is idempotent
    warehouse.load(new, DS, "events", EVENTS, mode="replace_partitions",
                   partition_column="event_date", partition_values=[dt.date(2024, 1, 2)])
    assert _count(warehouse, "events") == 7


def test_replace_partitions_with_no_rows_empties_the_partition(warehouse):
    warehouse.load(_events("2024-01-01", ["a"]), DS, "events", EVENTS)
    warehouse.load(_events("2024-01-02", ["b"]), DS, "events", EVENTS)
    warehouse.load(_events("2024-01-01", []), DS, "events", EVENTS, mode="replace_partitions",
                   partition_column="event_date", partition_values=["2024-01-01"])
    assert _rows(warehouse, f"SELECT event_id FROM `{DS}.events`") == [("b",)]


def test_replace_partitions_is_atomic(warehouse):
    """A failing replacement leaves the old partition in place (no half-done delete)."""
    warehouse.load(_events("2024-01-01", ["a", "b"]), DS, "events", EVENTS)
    bad = _events("2024-01-01", ["x", None])  # event_id is REQUIRED
    with pytest.raises((WarehouseError, ValueError)):
        warehouse.load(bad, DS, "events", EVENTS, mode="replace_partitions",
                       partition_column="event_date", partition_values=["2024-01-01"])
    assert _rows(warehouse, f"SELECT event_id FROM `{DS}.events` ORDER BY 1") == [("a",), ("b",)]
    # no staging table is left behind
    assert not [t for t in _tables(warehouse) if t.startswith("_stage")]


def test_replace_partitions_on_timestamp_partitions(warehouse):
    schema = [Column("hour", "TIMESTAMP", required=True), Column("n", "INT64")]
    h = [dt.datetime(2024, 1, 1, i, tzinfo=UTC) for i in range(3)]
    warehouse.load(pd.DataFrame({"hour": h, "n": [1, 1, 1]}), DS, "hourly", schema)
    warehouse.load(pd.DataFrame({"hour": [h[1]], "n": [5]}), DS, "hourly", schema,
                   mode="replace_partitions", partition_column="hour",
                   partition_values=[pd.Timestamp(h[1])])
    assert [r[1] for r in _rows(warehouse, f"SELECT hour, n FROM `{DS}.hourly` ORDER BY hour")] == [1, 5, 1]


def _tables(warehouse) -> list[str]:
    if warehouse.engine == "duckdb":
        with warehouse.connect() as con:
            rows = con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [DS]
            ).fetchall()
        return [r[0] for r in rows]
    return [t.table_id for t in warehouse.client.list_tables(f"{warehouse.project}.{DS}")]


# ---------------------------------------------------------------------------------------
# merge / insert_missing
# ---------------------------------------------------------------------------------------
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
T1 = dt.datetime(2024, 2, 1, tzinfo=UTC)


def _users(rows: list[tuple], at: dt.datetime) -> pd.DataFrame:
    return pd.DataFrame(
        [{"user_id": u, "name": n, "score": s, "inserted_at": at, "updated_at": at} for u, n, s in rows]
    )


def test_merge_on_key_updates_inserts_and_never_duplicates(warehouse):
    kw = dict(mode="merge", key_columns=["user_id"], preserve_on_update=["inserted_at"])
    first = warehouse.load(_users([("u1", "Ann", 1), ("u2", "Bob", 2)], T0), DS, "users", USERS, **kw)
    assert first.rows_affected == 2

    batch = _users([("u2", "Bobby", 20), ("u3", "Cy", 3)], T1)
    second = warehouse.load(batch, DS, "users", USERS, **kw)
    assert second == LoadResult(rows_staged=2, rows_affected=2)  # 1 updated + 1 inserted
    again = warehouse.load(batch, DS, "users", USERS, **kw)  # replay: same result
    assert again.rows_affected == 2

    got = _rows(warehouse, f"SELECT user_id, name, score, inserted_at, updated_at FROM `{DS}.users` ORDER BY 1")
    assert got == [
        ("u1", "Ann", 1, T0, T0),
        ("u2", "Bobby", 20, T0, T1),  # inserted_at preserved, the rest updated
        ("u3", "Cy", 3, T1, T1),
    ]


def test_merge_deduplicates_keys_within_a_batch_last_row_wins(warehouse):
    batch = _users([("u1", "old", 1), ("u2", "B", 2), ("u1", "new", 9)], T0)
    result = warehouse.load(batch, DS, "users", USERS, mode="merge", key_columns=["user_id"])
    assert result.rows_staged == 2
    assert _rows(warehouse, f"SELECT user_id, name FROM `{DS}.users` ORDER BY 1") == [("u1", "new"), ("u2", "B")]
    # the same duplicated batch against existing rows: still one row per key
    warehouse.load(batch, DS, "users", USERS, mode="merge", key_columns=["user_id"])
    assert _count(warehouse, "users") == 2


def test_merge_on_composite_key(warehouse):
    schema = [Column("day", "DATE"), Column("user_id", "STRING"), Column("n", "INT64")]
    frame = pd.DataFrame({"day": ["2024-01-01", "2024-01-01", "2024-01-02"], "user_id": ["a", "b", "a"], "n": [1, 2, 3]})
    warehouse.load(frame, DS, "daily", schema, mode="merge", key_columns=["day", "user_id"])
    update = pd.DataFrame({"day": ["2024-01-02"], "user_id": ["a"], "n": [30]})
    warehouse.load(update, DS, "daily", schema, mode="merge", key_columns=["day", "user_id"])
    assert [r[2] for r in _rows(warehouse, f"SELECT day, user_id, n FROM `{DS}.daily` ORDER BY 1, 2")] == [1, 2, 30]


def test_merge_rejects_null_keys(warehouse):
    batch = _users([("u1", "A", 1), (None, "B", 2)], T0)
    with pytest.raises(ValueError, match="user_id"):
        warehouse.load(batch, DS, "users", USERS, mode="merge", key_columns=["user_id"])
    assert _count(warehouse, "users") == 0


def test_insert_missing_keeps_existing_rows(warehouse):
    warehouse.load(_users([("u1", "Ann", 1)], T0), DS, "users", USERS, mode="insert_missing", key_columns=["user_id"])
    result = warehouse.load(
        _users([("u1", "CHANGED", 99), ("u2", "Bob", 2)], T1), DS, "users", USERS,
        mode="insert_missing", key_columns=["user_id"],
    )
    assert result.rows_affected == 1
    assert _rows(warehouse, f"SELECT user_id, name, score, inserted_at FROM `{DS}.users` ORDER BY 1") == [
        ("u1", "Ann", 1, T0),
        ("u2", "Bob", 2, T1),
    ]


def test_load_modes_need_their_arguments(warehouse):
    with pytest.raises(ValueError):
        warehouse.load(_users([("u1", "A", 1)], T0), DS, "users", USERS, mode="merge")
    with pytest.raises(ValueError):
        warehouse.load(_events("2024-01-01", ["a"]), DS, "events", EVENTS, mode="replace_partitions")
    with pytest.raises(ValueError):
        warehouse.load(_events("2024-01-01", ["a"]), DS, "events", EVENTS, mode="upsert")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# bound parameters
# ---------------------------------------------------------------------------------------
HOSTILE = "x'); DROP TABLE contract.events; -- `y` \"z\" ; \\ \n"


def test_parameters_are_data_not_sql(warehouse):
    warehouse.load(_events("2024-01-01", ["a"], user=HOSTILE), DS, "events", EVENTS)
    assert _rows(warehouse, f"SELECT event_id FROM `{DS}.events` WHERE user_id = @u", {"u": HOSTILE}) == [("a",)]
    assert _rows(warehouse, "SELECT @v AS v", {"v": HOSTILE}) == [(HOSTILE,)]

    affected = warehouse.execute(
        f"INSERT INTO `{DS}.events` (event_date, event_id, user_id) VALUES (@d, @id, @u)",
        {"d": dt.date(2024, 1, 2), "id": "b", "u": HOSTILE},
    )
    assert affected == 1
    assert warehouse.table_exists(DS, "events")
    assert _rows(warehouse, f"SELECT COUNT(*) FROM `{DS}.events` WHERE user_id = @u", {"u": HOSTILE}) == [(2,)]


def test_parameter_types(warehouse):
    got = _rows(
        warehouse,
        "SELECT @i + 1 AS i, @f * 2 AS f, NOT @b AS b, DATE_ADD(@d, INTERVAL 1 DAY) AS d, "
        "TIMESTAMP_ADD(@t, INTERVAL 1 HOUR) AS t, @s AS s, @n IS NULL AS n",
        {"i": 2**62, "f": 1.25, "b": True, "d": dt.date(2024, 2, 28),
         "t": dt.datetime(2024, 1, 1, 23, 30, tzinfo=UTC), "s": "ü", "n": None},
    )
    assert got == [(2**62 + 1, 2.5, False, dt.date(2024, 2, 29), dt.datetime(2024, 1, 2, 0, 30, tzinfo=UTC), "ü", True)]


def test_array_parameters_in_unnest(warehouse):
    warehouse.load(
        pd.concat([_events("2024-01-01", ["a", "b"], value=1), _events("2024-01-02", ["c"], value=2)]),
        DS, "events", EVENTS,
    )
    sql = f"SELECT event_id FROM `{DS}.events` WHERE event_id IN UNNEST(@ids) ORDER BY 1"
    assert _rows(warehouse, sql, {"ids": ["a", "c", "zz"]}) == [("a",), ("c",)]
    assert _rows(warehouse, sql, {"ids": ("b",)}) == [("b",)]
    assert _rows(warehouse, sql, {"ids": []}) == []

    by_value = f"SELECT event_id FROM `{DS}.events` WHERE value IN UNNEST(@v) ORDER BY 1"
    assert _rows(warehouse, by_value, {"v": [2]}) == [("c",)]
    # An empty list has no element type: like BigQuery, it is ARRAY<STRING> unless typed.
    assert _rows(warehouse, by_value, {"v": Param([], "INT64")}) == []
    with pytest.raises(WarehouseError):
        warehouse.query(by_value, {"v": []})
    not_in = f"SELECT COUNT(*) FROM `{DS}.events` WHERE value NOT IN UNNEST(@v)"
    assert _rows(warehouse, not_in, {"v": Param([], "INT64")}) == [(3,)]

    by_day = f"SELECT event_id FROM `{DS}.events` WHERE event_date IN UNNEST(@days) ORDER BY 1"
    assert _rows(warehouse, by_day, {"days": [dt.date(2024, 1, 2)]}) == [("c",)]
    assert _rows(warehouse, by_day, {"days": Param([], "DATE")}) == []
    # unused parameters are ignored on both engines
    assert _rows(warehouse, f"SELECT COUNT(*) FROM `{DS}.events`", {"unused": 1}) == [(3,)]
    # parameter names that are prefixes of each other
    assert _rows(warehouse, "SELECT @id AS a, ARRAY_LENGTH(@ids) AS b", {"id": "x", "ids": ["p", "q"]}) == [("x", 2)]


def test_typed_null_parameters(warehouse):
    got = _rows(
        warehouse,
        "SELECT TIMESTAMP_ADD(@t, INTERVAL 1 HOUR) IS NULL AS a, COALESCE(@n, 5) + 1 AS b, @d AS d",
        {"t": Param(None, "TIMESTAMP"), "n": Param(None, "INT64"), "d": Param(None, "DATE")},
    )
    assert got == [(True, 6, None)]


# ---------------------------------------------------------------------------------------
# window functions
# ---------------------------------------------------------------------------------------
def test_window_functions_row_number_and_qualify(warehouse):
    rows = []
    for i, (user, hour, value) in enumerate([("u1", 1, 10), ("u1", 3, 30), ("u1", 2, 20), ("u2", 5, 50), ("u2", 4, 40)]):
        rows.append({"event_date": dt.date(2024, 1, 1), "event_id": f"e{i}", "user_id": user, "value": value,
                     "ts": dt.datetime(2024, 1, 1, hour, tzinfo=UTC)})
    warehouse.load(pd.DataFrame(rows), DS, "events", EVENTS)

    latest = _rows(
        warehouse,
        f"""
        SELECT user_id, value
        FROM `{DS}.events`
        WHERE TRUE
        QUALIFY ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts DESC) = 1
        ORDER BY user_id
        """,
    )
    assert latest == [("u1", 30), ("u2", 50)]

    running = _rows(
        warehouse,
        f"""
        SELECT user_id, value,
               SUM(value) OVER (PARTITION BY user_id ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running,
               LAG(value) OVER (PARTITION BY user_id ORDER BY ts) AS previous,
               ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts) AS rn
        FROM `{DS}.events`
        ORDER BY user_id, ts
        """,
    )
    assert running == [
        ("u1", 10, 10, None, 1), ("u1", 20, 30, 10, 2), ("u1", 30, 60, 20, 3),
        ("u2", 40, 40, None, 1), ("u2", 50, 90, 40, 2),
    ]


# ---------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------
JSON_SCHEMA = [Column("id", "STRING", required=True), Column("props", "JSON")]
BIG = 2**53 + 1  # not representable as a double


def test_json_extraction(warehouse):
    docs = [
        {"$device_id": "dev-1", "plan": {"tier": "pro"}, "big": BIG, "tags": ["a", "b"], "quote": "it's \"x\""},
        {"$device_id": "dev-2", "plan": None, "big": 1},
    ]
    frame = pd.DataFrame({"id": ["a", "b", "c"], "props": [json.dumps(docs[0]), docs[1], None]})  # str, dict, NULL
    warehouse.load(frame, DS, "docs", JSON_SCHEMA)

    got = _rows(
        warehouse,
        f"""
        SELECT id,
               JSON_VALUE(props, '$."$device_id"') AS device_id,
               JSON_VALUE(props, '$.plan.tier') AS tier,
               JSON_VALUE(props, '$.big') AS big,
               JSON_VALUE(props, '$.quote') AS quote,
               JSON_VALUE(props, '$.missing') AS missing
        FROM `{DS}.docs` ORDER BY id
        """,
    )
    assert got == [
        ("a", "dev-1", "pro", str(BIG), "it's \"x\"", None),
        ("b", "dev-2", None, "1", None, None),
        ("c", None, None, None, None, None),
    ]

    # the large integer is kept exact in the stored JSON text
    text = _rows(warehouse, f"SELECT TO_JSON_STRING(props) FROM `{DS}.docs` WHERE id = 'a'")[0][0]
    assert json.loads(text)["big"] == BIG
    assert str(BIG) in text

    # integers and filtering through JSON
    assert _rows(
        warehouse,
        f"SELECT id FROM `{DS}.docs` WHERE SAFE_CAST(JSON_VALUE(props, '$.big') AS INT64) = @big",
        {"big": BIG},
    ) == [("a",)]


def test_json_parameter_filter_on_special_key(warehouse):
    frame = pd.DataFrame({"id": ["a", "b"], "props": [{"$device_id": "d'1; --"}, {"$device_id": "d2"}]})
    warehouse.load(frame, DS, "docs", JSON_SCHEMA)
    assert _rows(
        warehouse, f"SELECT id FROM `{DS}.docs` WHERE JSON_VALUE(props, '$.\"$device_id\"') = @d", {"d": "d'1; --"}
    ) == [("a",)]


# ---------------------------------------------------------------------------------------
# timestamps are UTC
# ---------------------------------------------------------------------------------------
@pytest.fixture
def new_york_process(monkeypatch):
    """The test process runs in America/New_York (the code must not care)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_timestamps_are_utc_whatever_the_process_time_zone(warehouse, new_york_process):
    tokyo = dt.timezone(dt.timedelta(hours=9))
    frame = pd.DataFrame(
        {
            "event_date": [dt.date(2024, 3, 10)] * 3,
            "event_id": ["tokyo", "naive", "late"],
            # 09:30 in Tokyo = 00:30 UTC; naive = UTC; 02:00 UTC is still the 9th in New York
            "ts": [
                dt.datetime(2024, 3, 10, 9, 30, tzinfo=tokyo),
                dt.datetime(2024, 3, 10, 0, 30),
                pd.Timestamp("2024-03-10T02:00:00Z"),
            ],
        }
    )
    warehouse.load(frame, DS, "events", EVENTS)

    got = _rows(
        warehouse,
        f"""
        SELECT event_id, ts, DATE(ts) AS d, EXTRACT(HOUR FROM ts) AS h,
               FORMAT_TIMESTAMP('%Y-%m-%d %H:%M:%S', ts) AS f,
               TIMESTAMP_TRUNC(ts, DAY) AS day_start,
               CAST(DATE(ts) AS STRING) AS ds
        FROM `{DS}.events` ORDER BY event_id
        """,
    )
    midnight = dt.datetime(2024, 3, 10, tzinfo=UTC)
    assert got == [
        ("late", dt.datetime(2024, 3, 10, 2, tzinfo=UTC), dt.date(2024, 3, 10), 2, "2024-03-10 02:00:00", midnight, "2024-03-10"),
        ("naive", dt.datetime(2024, 3, 10, 0, 30, tzinfo=UTC), dt.date(2024, 3, 10), 0, "2024-03-10 00:30:00", midnight, "2024-03-10"),
        ("tokyo", dt.datetime(2024, 3, 10, 0, 30, tzinfo=UTC), dt.date(2024, 3, 10), 0, "2024-03-10 00:30:00", midnight, "2024-03-10"),
    ]
    # results are tz-aware UTC
    ts = warehouse.query(f"SELECT ts FROM `{DS}.events` LIMIT 1")["ts"].iloc[0]
    assert ts.tzinfo is not None and ts.utcoffset() == dt.timedelta(0)

    # timestamp parameters: aware values in any zone and naive values (= UTC)
    newyork = dt.timezone(dt.timedelta(hours=-5))
    sql = f"SELECT event_id FROM `{DS}.events` WHERE ts >= @start AND ts < @end ORDER BY 1"
    assert _rows(warehouse, sql, {"start": dt.datetime(2024, 3, 9, 19, 31, tzinfo=newyork),
                                  "end": dt.datetime(2024, 3, 10, 3)}) == [("late",)]
    assert _rows(warehouse, "SELECT DATE(@t) AS d", {"t": dt.datetime(2024, 3, 9, 22, tzinfo=newyork)}) == [
        (dt.date(2024, 3, 10),)
    ]
    # partitions by UTC day
    assert _rows(
        warehouse,
        f"SELECT COUNT(*) FROM `{DS}.events` WHERE DATE(ts) = @d",
        {"d": dt.date(2024, 3, 10)},
    ) == [(3,)]


def test_current_timestamp_and_date_are_utc(warehouse, new_york_process):
    before = dt.datetime.now(UTC)
    (now, today, hour), = _rows(
        warehouse,
        "SELECT CURRENT_TIMESTAMP() AS now, CURRENT_DATE() AS today, EXTRACT(HOUR FROM CURRENT_TIMESTAMP()) AS h",
    )
    after = dt.datetime.now(UTC)
    assert before - dt.timedelta(seconds=5) <= now <= after + dt.timedelta(seconds=5)
    assert today in {before.date(), after.date()}
    assert hour in {before.hour, after.hour}


# ---------------------------------------------------------------------------------------
# identifiers
# ---------------------------------------------------------------------------------------
HOSTILE_NAMES = [
    "events; DROP TABLE x",
    "a`b",
    "a.b",
    "a-b",
    "",
    " ",
    "1abc",
    "a b",
    'a"b',
    "événements",
    "x" * 129,
    "a\nb",
    "a'--",
    None,
    42,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_validate_identifier_rejects_hostile_names(name):
    with pytest.raises(ValueError):
        validate_identifier(name)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        render_sql("SELECT * FROM `{dataset}.t`", dataset=name)


@pytest.mark.parametrize("name", ["events", "_stage", "Mixpanel_Events_2024", "a" * 128])
def test_validate_identifier_accepts_plain_names(name):
    assert validate_identifier(name) == name


def test_hostile_identifiers_never_reach_the_engine(warehouse):
    warehouse.ensure_table(DS, "events", EVENTS)
    for bad in ["events`; DROP TABLE `contract.events", "x.y", "a b"]:
        with pytest.raises(ValueError):
            warehouse.load(_events("2024-01-01", ["a"]), DS, bad, EVENTS)
        with pytest.raises(ValueError):
            warehouse.load(_events("2024-01-01", ["a"]), bad, "events", EVENTS)
        with pytest.raises(ValueError):
            warehouse.ensure_table(DS, bad, EVENTS)
        with pytest.raises(ValueError):
            Column(bad, "STRING")
    with pytest.raises(ValueError):
        warehouse.load(_users([("u", "n", 1)], T0), DS, "users", USERS, mode="merge", key_columns=["user_id; --"])
    assert warehouse.table_columns(DS, "events") == [c.name for c in EVENTS]


def test_sql_errors_raise_warehouse_error(warehouse):
    with pytest.raises(WarehouseError):
        warehouse.query(f"SELECT no_such_column FROM `{DS}.nowhere`")


# ---------------------------------------------------------------------------------------
# dialect parity: BigQuery semantics that the DuckDB transpilation must keep
# ---------------------------------------------------------------------------------------
D = dt.date(2024, 3, 10)  # a Sunday
T = dt.datetime(2024, 3, 10, 5, 30, tzinfo=UTC)
PARITY = {
    "date_add": ("DATE_ADD(@d, INTERVAL 1 DAY)", dt.date(2024, 3, 11)),
    "date_sub": ("DATE_SUB(@d, INTERVAL 7 DAY)", dt.date(2024, 3, 3)),
    "date_add_month": ("DATE_ADD(DATE '2024-01-31', INTERVAL 1 MONTH)", dt.date(2024, 2, 29)),
    "date_trunc_month": ("DATE_TRUNC(@d, MONTH)", dt.date(2024, 3, 1)),
    "date_trunc_week": ("DATE_TRUNC(@d, WEEK)", dt.date(2024, 3, 10)),
    "date_trunc_monday": ("DATE_TRUNC(@d, WEEK(MONDAY))", dt.date(2024, 3, 4)),
    "date_trunc_isoweek": ("DATE_TRUNC(@d, ISOWEEK)", dt.date(2024, 3, 4)),
    "date_diff": ("DATE_DIFF(@d, DATE '2024-01-01', DAY)", 69),
    "dayofweek": ("EXTRACT(DAYOFWEEK FROM @d)", 1),
    "week": ("EXTRACT(WEEK FROM DATE '2024-01-06')", 0),
    "isoweek": ("EXTRACT(ISOWEEK FROM DATE '2024-01-01')", 1),
    "ts_trunc_week": ("TIMESTAMP_TRUNC(@t, WEEK)", dt.datetime(2024, 3, 10, tzinfo=UTC)),
    "ts_diff": ("TIMESTAMP_DIFF(@t, TIMESTAMP '2024-03-10 00:00:00+00', MINUTE)", 330),
    "ts_millis": ("TIMESTAMP_MILLIS(1700000000123)", dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
    "ts_seconds": ("TIMESTAMP_SECONDS(1700000000)", dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    "unix_seconds": ("UNIX_SECONDS(@t)", 1710048600),
    "ts_from_string": ("TIMESTAMP('2024-03-10 05:00:00')", dt.datetime(2024, 3, 10, 5, tzinfo=UTC)),
    "float_literal": ("3 * 0.5", 1.5),
    "round": ("ROUND(2.5)", 3.0),
    "safe_divide": ("SAFE_DIVIDE(1, 0)", None),
    "sum_int": ("(SELECT SUM(x) FROM UNNEST([1, 2, 3]) x)", 6),
    "countif": ("(SELECT COUNTIF(x > 1) FROM UNNEST([1, 2, 3]) x)", 2),
    "string_agg": ("(SELECT STRING_AGG(x, ',' ORDER BY x) FROM UNNEST(['b', 'a']) x)", "a,b"),
    "safe_cast": ("SAFE_CAST('x' AS INT64)", None),
    "json_query": ("""JSON_QUERY(JSON '{"a": {"b": 1}}', '$.a')""", '{"b":1}'),
}


def test_bigquery_semantics_on_both_engines(warehouse):
    select = ", ".join(f"{expr} AS {name}" for name, (expr, _) in PARITY.items())
    frame = warehouse.query(f"SELECT {select}", {"d": D, "t": T})
    got = {name: _plain(frame[name].iloc[0]) for name in PARITY}
    assert got == {name: expected for name, (_, expected) in PARITY.items()}
    # INT64 results are integers on both engines (DuckDB SUM would be a HUGEINT)
    assert str(frame["sum_int"].dtype) == "Int64"
    assert str(frame["date_add"].dtype) == "dbdate"


# ---------------------------------------------------------------------------------------
# insert_from_batch: a SQL file run over an Arrow batch (mixpanel's insert-absent)
# ---------------------------------------------------------------------------------------
def _mixpanel_batch(ids: list[str], props: str = '{"big": 9007199254740993, "s": "\\u00e9"}'):
    import pyarrow as pa

    at = dt.datetime(2024, 6, 5, 10, tzinfo=UTC)
    n = len(ids)
    return pa.table(
        {
            "event_id": ids,
            "event_name": ["app_open"] * n,
            "distinct_id": ["u1"] * n,
            "event_timestamp": pa.array([at] * n, pa.timestamp("us", tz="UTC")),
            "inserted_at": pa.array([at] * n, pa.timestamp("us", tz="UTC")),
            "properties": [props] * n,
            "event_date": [dt.date(2024, 6, 5)] * n,
            "device_id": [None] * n,
            "os": ["iOS"] * n,
            "mp_processing_time_ms": pa.array([7] * n, pa.int64()),
        }
    )


def test_insert_from_batch_runs_the_file_over_the_batch(warehouse):
    from analytics_platform.mixpanel.store import EVENTS_BATCH_SCHEMA
    from analytics_platform.mixpanel.tables import EVENTS_SCHEMA, ensure_events_table

    ensure_events_table(warehouse, DS, "mp_events")
    day = {"date_from": dt.date(2024, 6, 5), "date_to": dt.date(2024, 6, 5), "slice_from": dt.date(2024, 6, 5), "slice_to": dt.date(2024, 6, 5), "rows_expected": -1}

    def insert(batch) -> int:
        return warehouse.insert_from_batch(
            "mixpanel/insert_new_events", batch, EVENTS_BATCH_SCHEMA, day,
            batch_dataset=DS, dataset=DS, table="mp_events",
        )

    assert insert(_mixpanel_batch(["a", "b"])) == 2
    # insert-absent: the known ids are skipped, the new one is inserted
    assert insert(_mixpanel_batch(["a", "b", "c"])) == 1
    assert insert(_mixpanel_batch([])) == 0
    got = _rows(
        warehouse,
        f"SELECT event_id, event_date, os, mp_processing_time_ms, JSON_VALUE(properties, '$.big') "
        f"FROM `{DS}.mp_events` ORDER BY 1",
    )
    assert got == [(i, dt.date(2024, 6, 5), "iOS", 7, "9007199254740993") for i in "abc"]
    # the batch was read with the schema's types: JSON stored as JSON, big integers exact
    text = _rows(warehouse, f"SELECT TO_JSON_STRING(properties) FROM `{DS}.mp_events` LIMIT 1")[0][0]
    assert json.loads(text) == {"big": 9007199254740993, "s": "é"}
    # nothing is left behind (BigQuery stages the batch in a table of DS)
    assert [t for t in _tables(warehouse) if t != "mp_events"] == []


def test_insert_from_batch_failure_changes_nothing_and_cleans_up(warehouse):
    from analytics_platform.mixpanel.store import EVENTS_BATCH_SCHEMA
    from analytics_platform.mixpanel.tables import EVENTS_SCHEMA, ensure_events_table

    ensure_events_table(warehouse, DS, "mp_events")
    with pytest.raises(WarehouseError, match="insert_new_events"):
        # event_id is REQUIRED: the NULL row fails the statement, the valid one is not kept
        warehouse.insert_from_batch(
            "mixpanel/insert_new_events", _mixpanel_batch(["ok", None]), EVENTS_BATCH_SCHEMA,
            {"date_from": dt.date(2024, 6, 5), "date_to": dt.date(2024, 6, 5), "slice_from": dt.date(2024, 6, 5), "slice_to": dt.date(2024, 6, 5), "rows_expected": -1},
            batch_dataset=DS, dataset=DS, table="mp_events",
        )
    assert _count(warehouse, "mp_events") == 0
    assert [t for t in _tables(warehouse) if t != "mp_events"] == []
    with pytest.raises(ValueError):
        warehouse.insert_from_batch(
            "mixpanel/insert_new_events", _mixpanel_batch(["a"]), EVENTS_BATCH_SCHEMA,
            batch_dataset=DS, dataset=DS, table="mp_events; DROP TABLE x",
        )


def test_duckdb_batch_insert_is_single_threaded_then_reset_and_text_is_zstd(duckdb_warehouse):
    from analytics_platform.mixpanel.store import EVENTS_BATCH_SCHEMA
    from analytics_platform.mixpanel.tables import EVENTS_SCHEMA, ensure_events_table

    warehouse = duckdb_warehouse
    ensure_events_table(warehouse, DS, "mp_events")
    with warehouse.connect() as con:
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    seen = []
    original = warehouse.connect

    def spying_connect():
        # the statement runs with threads=1 (the spy reads it before the insert's COMMIT)
        ctx = original()
        con = ctx.__enter__()
        real_execute = con.execute

        class Spy:
            def __getattr__(self, name):
                return getattr(con, name)

            def execute(self, sql, *args):
                if sql.startswith("COMMIT"):
                    seen.append(real_execute("SELECT current_setting('threads')").fetchone()[0])
                return real_execute(sql, *args)

        class Ctx:
            def __enter__(self):
                return Spy()

            def __exit__(self, *exc):
                return ctx.__exit__(*exc)

        return Ctx()

    object.__setattr__(warehouse, "connect", spying_connect)
    try:
        warehouse.insert_from_batch(
            "mixpanel/insert_new_events", _mixpanel_batch([f"e{i}" for i in range(2000)]), EVENTS_BATCH_SCHEMA,
            {"date_from": dt.date(2024, 6, 5), "date_to": dt.date(2024, 6, 5), "slice_from": dt.date(2024, 6, 5), "slice_to": dt.date(2024, 6, 5), "rows_expected": -1},
            batch_dataset=DS, dataset=DS, table="mp_events",
        )
    finally:
        object.__delattr__(warehouse, "connect")
    assert seen == [1]
    with warehouse.connect() as con:
        assert con.execute("SELECT current_setting('threads')").fetchone()[0] == threads
        con.execute("CHECKPOINT")
        compression = dict(
            con.execute(
                "SELECT DISTINCT column_name, compression FROM pragma_storage_info(?) "
                "WHERE column_name IN ('event_id', 'properties') AND segment_type <> 'VALIDITY'",
                [f"{DS}.mp_events"],
            ).fetchall()
        )
    assert compression == {"event_id": "ZSTD", "properties": "ZSTD"}


# ---------------------------------------------------------------------------------------
# the statements BigQueryWarehouse builds are pure functions (no client needed)
# ---------------------------------------------------------------------------------------
def test_bigquery_statements_are_built_without_a_client():
    from analytics_platform.resources.warehouse import (
        add_column_statement,
        create_table_statement,
        load_statement,
        parse_json_copy_statement,
        plan_load,
    )

    assert create_table_statement(DS, "events", EVENTS[:2], "event_date", ["event_id"]) == (
        f"CREATE TABLE IF NOT EXISTS `{DS}.events` (`event_date` DATE NOT NULL, `event_id` STRING NOT NULL)"
        " PARTITION BY event_date CLUSTER BY `event_id`"
    )
    assert add_column_statement(DS, "events", Column("country", "STRING")) == (
        f"ALTER TABLE `{DS}.events` ADD COLUMN `country` STRING"
    )
    merge = load_statement(plan_load(DS, "users", USERS[:2], "merge", key_columns=["user_id"]), "_stage_x")
    assert merge == (
        f"MERGE `{DS}.users` T USING `{DS}._stage_x` S ON T.`user_id` = S.`user_id` "
        "WHEN MATCHED THEN UPDATE SET `name` = S.`name` "
        "WHEN NOT MATCHED THEN INSERT (`user_id`, `name`) VALUES (S.`user_id`, S.`name`)"
    )
    replace = load_statement(
        plan_load(DS, "events", EVENTS[:2], "replace_partitions", partition_column="event_date"), "_stage_x"
    )
    assert "WHEN NOT MATCHED BY SOURCE AND T.`event_date` IN UNNEST(@_partitions) THEN DELETE" in replace
    assert parse_json_copy_statement(DS, "_stage_x", JSON_SCHEMA) == (
        f"CREATE OR REPLACE TABLE `{DS}._stage_x` AS SELECT `id`, "
        f"PARSE_JSON(`props`, wide_number_mode=>'round') AS `props` FROM `{DS}._stage_x`"
    )
    with pytest.raises(ValueError):
        create_table_statement(DS, "events", EVENTS, partition_by="event_date; DROP TABLE x")


def test_a_duckdb_session_holds_the_file_for_its_block_only(duckdb_warehouse):
    """Warehouse.session(): the database stays open for the block (re-entrant), statements
    in it work, and the file is free for another process once the block ends."""
    import subprocess
    import sys

    probe = (
        "import duckdb, sys\n"
        "try:\n"
        "    duckdb.connect(sys.argv[1]).close(); print('opened')\n"
        "except duckdb.IOException:\n"
        "    print('locked')\n"
    )

    def other_process() -> str:
        return subprocess.run([sys.executable, "-c", probe, duckdb_warehouse.path],
                              capture_output=True, text=True, check=True).stdout.strip()

    duckdb_warehouse.ensure_dataset(DS)
    with duckdb_warehouse.session():
        with duckdb_warehouse.session():
            duckdb_warehouse.execute(f"CREATE TABLE `{DS}.s` AS SELECT 1 AS x")
        assert other_process() == "locked"  # still held by the outer block
        assert int(duckdb_warehouse.query(f"SELECT COUNT(*) AS n FROM `{DS}.s`")["n"].iloc[0]) == 1
    assert other_process() == "opened"
