"""BigQuery Standard SQL -> DuckDB SQL (sqlglot), keeping BigQuery's result types.

Used by the DuckDB engine only: the SQL files are written once, in BigQuery's dialect.
"""

from __future__ import annotations

import functools
import re


def _bigquery_semantics(node):
    """Make the DuckDB output keep BigQuery's result types where sqlglot alone does not."""
    from sqlglot import exp

    parent = node.parent
    if isinstance(node, exp.SafeFunc) and isinstance(node.this, exp.ParseJSON):
        # SAFE.PARSE_JSON(text): NULL for text that is not JSON; DuckDB's TRY_CAST to JSON.
        return exp.TryCast(this=node.this.this, to=exp.DataType.build("JSON"))
    if isinstance(node, (exp.DateAdd, exp.DateSub, exp.DateTrunc)) and not isinstance(parent, exp.Cast):
        # BigQuery DATE_ADD/DATE_SUB/DATE_TRUNC return DATE; DuckDB's date +/- interval is a TIMESTAMP.
        return exp.cast(node, exp.DataType.build("DATE"))
    if isinstance(node, exp.UnixToTime) and not isinstance(parent, exp.Cast):
        # TIMESTAMP_MILLIS/MICROS: DuckDB's epoch_ms/make_timestamp are naive; BigQuery's are UTC.
        return exp.cast(node, exp.DataType.build("TIMESTAMPTZ"))
    if isinstance(node, exp.Extract) and isinstance(node.this, (exp.Var, exp.Identifier, exp.Column)):
        part = node.this.name.upper()
        if part == "DAYOFWEEK" and not isinstance(parent, exp.Add):
            # BigQuery DAYOFWEEK is 1 (Sunday) .. 7; DuckDB's is 0 .. 6.
            return exp.Paren(this=exp.Add(this=node, expression=exp.Literal.number(1)))
        if part == "ISOWEEK":
            # DuckDB's WEEK is the ISO week.
            return exp.Extract(this=exp.Var(this="WEEK"), expression=node.expression)
        if part == "WEEK":
            # BigQuery WEEK: weeks start on Sunday, days before the first Sunday are week 0.
            return exp.cast(
                exp.Anonymous(this="STRFTIME", expressions=[node.expression, exp.Literal.string("%U")]),
                exp.DataType.build("BIGINT"),
            )
    if (
        isinstance(node, exp.Literal)
        and not node.is_string
        and any(ch in node.this for ch in ".eE")
        and not isinstance(parent, (exp.Cast, exp.Interval))
    ):
        # BigQuery 2.5 is FLOAT64; DuckDB's is DECIMAL(2,1).
        return exp.cast(node, exp.DataType.build("DOUBLE"))
    return node


@functools.lru_cache(maxsize=2048)
def transpile_to_duckdb(sql: str, casts: tuple[tuple[str, str], ...] = ()) -> str:
    """BigQuery-dialect SQL -> DuckDB SQL (cached: the same file is run many times).

    ``casts``: ``(parameter name, BigQuery type)`` pairs; each ``@name`` is wrapped in a
    CAST to that type, so typed NULLs and (empty) arrays bind as BigQuery would type them.
    A few rewrites keep BigQuery's result types (see ``_bigquery_semantics``).
    """
    import sqlglot
    from sqlglot import exp

    trees = [t for t in sqlglot.parse(sql, read="bigquery") if t is not None]
    wanted = dict(casts)

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Parameter):
            if node.name in wanted and not isinstance(node.parent, exp.Cast):
                return exp.cast(node.copy(), exp.DataType.build(wanted[node.name], dialect="bigquery"))
            return node
        return _bigquery_semantics(node)

    trees = [t.transform(rewrite) for t in trees]
    return ";\n".join(t.sql(dialect="duckdb") for t in trees)


def used_parameters(duck_sql: str) -> set[str]:
    return set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", duck_sql))
