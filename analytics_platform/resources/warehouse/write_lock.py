"""Serialized batch writes (``Warehouse.write_batch``): the statements and the retry rule.

Why a lock row: on BigQuery an ``INSERT`` (and a ``MERGE`` whose ``UPDATE``/``DELETE``
clauses match nothing, e.g. the first load of a day) never conflicts with another DML job:
two writers of the same new day both find an ``event_id`` absent and both insert it
(https://cloud.google.com/bigquery/docs/data-manipulation-language#dml_statement_conflicts).
A multi-statement transaction alone does not help either: only transactions that *mutate*
(update / delete) rows of the same table conflict
(https://cloud.google.com/bigquery/docs/transactions#transaction_concurrency).
So each batch write is ONE transaction whose first statement updates the writer's row of
``{dataset}.warehouse_write_locks``: two such transactions always mutate the same row, so
BigQuery cancels one of them ("Transaction is aborted due to concurrent update against
table ..."); it is retried (:data:`RETRY_DELAYS`) with a fresh snapshot that sees the
winner's rows, so its "insert when absent" inserts nothing twice.  DuckDB behaves the same
way (first updater wins: "Conflict on update"), so both engines run the same statements.

Every function here is pure (no client, no connection).
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Optional, Sequence

from analytics_platform.common import validate_identifier
from analytics_platform.resources.warehouse.schema import Column

WRITE_LOCKS_TABLE = "warehouse_write_locks"
WRITE_LOCKS_SCHEMA = (
    Column("lock_name", "STRING", required=True),
    Column("holder", "STRING"),
    Column("locked_at", "TIMESTAMP"),
)
# Seconds to wait before each retry of a write cancelled by a concurrent writer (the
# winner's transaction usually lasts a few seconds); jitter is added.
RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30, 30, 30, 30)
# How the engines report a transaction cancelled by a concurrent one.
_CONFLICT_MARKERS = (
    "concurrent update",  # BigQuery: Transaction is aborted due to concurrent update against table ...
    "could not serialize access",  # BigQuery: Could not serialize access to table ... due to concurrent update
    "conflict on update",  # DuckDB: TransactionContext Error: Conflict on update!
    "conflict on tuple deletion",  # DuckDB
    "write-write conflict",  # DuckDB
    # The BigQuery API emulator (DuckLake underneath) cancels the second of two concurrent
    # transactions on the lock row at its commit with this message.
    "failed to commit ducklake transaction",
)


def is_write_conflict(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause) says a concurrent writer won: retry the write."""
    seen = 0
    while exc is not None and seen < 5:
        text = str(exc).lower()
        if any(m in text for m in _CONFLICT_MARKERS):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def retry_delay(attempt: int) -> float:
    """Seconds before retry ``attempt`` (0-based), with up to 50% jitter."""
    base = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
    return base * (1 + random.random() / 2)


def ensure_lock_row_statement(dataset: str) -> str:
    """Insert the lock's row when absent (``@_lock_name``).  Two first writers may both
    insert it: harmless, the lock UPDATE then mutates both rows."""
    ref = f"`{validate_identifier(dataset)}.{WRITE_LOCKS_TABLE}`"
    return (
        f"INSERT INTO {ref} (lock_name, holder, locked_at) "
        f"SELECT @_lock_name, CAST(NULL AS STRING), CAST(NULL AS TIMESTAMP) FROM UNNEST([1]) "
        f"WHERE NOT EXISTS (SELECT 1 FROM {ref} AS l WHERE l.lock_name = @_lock_name)"
    )


def take_lock_statement(dataset: str) -> str:
    """The transaction's first statement: mutate the lock's row (``@_lock_name``,
    ``@_lock_holder``), so concurrent holders conflict."""
    return (
        f"UPDATE `{validate_identifier(dataset)}.{WRITE_LOCKS_TABLE}` "
        f"SET holder = @_lock_holder, locked_at = CURRENT_TIMESTAMP() WHERE lock_name = @_lock_name"
    )


def is_query(statement: str) -> bool:
    """A statement of a batch write that is a scalar SELECT (its value is the result)."""
    return statement.lstrip().upper().startswith(("SELECT", "WITH"))


def bigquery_write_script(dataset: str, statements: Sequence[str], guards: Sequence[Optional[int]] = ()) -> str:
    """One BigQuery script: make sure the lock's row exists, then ONE transaction that takes
    the lock and runs ``statements`` (DML: its ``@@row_count``; a scalar SELECT: its value);
    the script's result is one row ``n0, n1, ...``.  ``guards[i]``: the index of an earlier
    statement whose result must be positive for statement ``i`` to run (else its result is 0)."""
    names = [f"n{i}" for i in range(len(statements))]
    guards = list(guards) + [None] * (len(statements) - len(guards))
    parts = [f"DECLARE {n} INT64 DEFAULT 0" for n in names]
    parts += [ensure_lock_row_statement(dataset), "BEGIN TRANSACTION", take_lock_statement(dataset)]
    for n, stmt, guard in zip(names, statements, guards):
        body = stmt.strip().rstrip(";")
        if is_query(body):
            steps = [f"SET {n} = ({body})"]
        else:
            steps = [body, f"SET {n} = @@row_count"]
        if guard is not None:
            steps = [f"IF n{guard} > 0 THEN\n{steps[0]}", *steps[1:], "END IF"]
        parts += steps
    parts += ["COMMIT TRANSACTION", "SELECT " + ", ".join(f"{n} AS {n}" for n in names)]
    return ";\n".join(parts) + ";"


def lock_holder(now: dt.datetime, token: str) -> str:
    return f"{now.isoformat()} {token}"
