"""Google's ZetaSQL analyzer (PyPI ``zetasql``, a WASM build run by wasmtime) set up as
BigQuery: :class:`BigQueryGate` analyses a statement with BigQuery's language options, a
catalog of ``{(dataset, table): ((column, type), ...)}`` and typed query parameters, and
checks the partitioning / clustering rules BigQuery adds to ZetaSQL's.

The analyzer is started once per process, with the compiled module cached on disk.

Compiling the 28 MB ``zetasql.wasm`` takes 10-30 s of CPU; the compiled machine code is
serialised to ``<cache_dir>/zetasql-<versions>-<hash>.cwasm`` and re-used by later runs
(well under a second to load).  A cache written by another wasmtime build or CPU is
rejected by wasmtime itself and recompiled.  Default cache directory:
``$ZETASQL_CACHE_DIR`` or ``~/.cache/analytics_platform/zetasql``.

:class:`ZetaSQL` talks to the analyzer with the raw protobuf messages of ZetaSQL's local
service (``AnalyzeRequest`` with a registered catalog): only "does it resolve and
type-check" is needed, so the resolved AST is never converted to Python objects.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import sys
import tempfile
import threading
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Optional

Schema = tuple[tuple[str, str], ...]  # ((column, BigQuery type), ...)

_LOCK = threading.Lock()
_INSTANCE: Optional["ZetaSQL"] = None


def _cache_dir() -> Path:
    env = os.environ.get("ZETASQL_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "analytics_platform" / "zetasql"


def _compiled_module(engine, wasm_path: Path):
    """The wasmtime Module of ``wasm_path``: from the on-disk cache, else compiled (and cached)."""
    from wasmtime import Module, WasmtimeError

    digest = hashlib.sha256()
    with open(wasm_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    versions = f"zetasql{metadata.version('zetasql')}-wasmtime{metadata.version('wasmtime')}"
    cache = _cache_dir() / f"{versions}-{digest.hexdigest()[:16]}.cwasm"
    with _file_lock(cache.with_suffix(".lock")):  # parallel workers compile once
        if cache.exists():
            try:
                return Module.deserialize_file(engine, str(cache))
            except (WasmtimeError, OSError):  # another wasmtime build / CPU: recompile
                pass
        module = Module.from_file(engine, str(wasm_path))
        _write_cache(cache, module)
    return module


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")
    except (ImportError, OSError):  # no fcntl / read-only cache: compile unlocked
        yield
        return
    try:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
    finally:
        fh.close()


def _write_cache(cache: Path, module) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(module.serialize())
        os.replace(tmp, cache)  # atomic: concurrent test workers never read half a file
    except OSError:
        pass  # a read-only home: no cache, still correct


def _wasm_client():
    """zetasql's WasmClient, built like its own constructor but from the cached module."""
    from wasmtime import Config, Engine, Linker, Store, WasiConfig
    from zetasql.core.wasm_client import WasmClient, get_tzinfo_dir
    from zetasql.wasi import get_wasm_path

    client = WasmClient.__new__(WasmClient)
    wasi = WasiConfig()
    wasi.inherit_stderr()
    tz = get_tzinfo_dir()
    if tz:
        wasi.preopen_dir(tz, "/usr/share/zoneinfo")
    config = Config()
    with contextlib.suppress(AttributeError):
        config.shared_memory = True
    engine = Engine(config)
    client.store = Store(engine)
    client.store.set_wasi(wasi)
    client.module = _compiled_module(engine, Path(get_wasm_path()))
    linker = Linker(engine)
    linker.define_wasi()
    client.instance = linker.instantiate(client.store, client.module)
    client.exports = client.instance.exports(client.store)
    with contextlib.suppress(KeyError):
        client.exports["_initialize"](client.store)
    client.memory = client.exports["memory"]
    # zetasql copies bytes one by one through Python; one memmove is ~100x faster.
    def base() -> int:
        return ctypes.addressof(client.memory.data_ptr().contents)

    client.write_bytes = lambda ptr, data: ctypes.memmove(base() + ptr, bytes(data), len(data))
    client.read_bytes = lambda ptr, size: ctypes.string_at(base() + ptr, size)
    return client


class ZetaSQLError(Exception):
    """The analyzer rejected a statement (its message says why and where)."""


class ZetaSQL:
    """One analyzer process-wide (see :func:`zetasql_service`)."""

    def __init__(self) -> None:
        from zetasql.wasi._pb2.zetasql.local_service import local_service_pb2
        from zetasql.wasi._pb2.zetasql.proto import options_pb2

        self._pb = local_service_pb2
        self._options_pb = options_pb2
        self.client = _wasm_client()

    def call(self, method: str, request, response_type):
        from zetasql.core.exceptions import ServerError

        try:
            return self.client.call_grpc_func(f"ZetaSqlLocalService_{method}", request, response_type)
        except ServerError as exc:
            raise ZetaSQLError(str(exc)) from None

    def maximum_language_options(self):
        """``LanguageOptionsProto`` with every released ZetaSQL feature enabled."""
        req = self._pb.LanguageOptionsRequest(maximum_features=True)
        return self.call("GetLanguageOptions", req, self._options_pb.LanguageOptionsProto)

    def register_catalog(self, catalog_proto) -> int:
        req = self._pb.RegisterCatalogRequest(simple_catalog=catalog_proto)
        return self.call("RegisterCatalog", req, self._pb.RegisterResponse).registered_id

    def unregister_catalog(self, catalog_id: int) -> None:
        from google.protobuf import empty_pb2

        self.call("UnregisterCatalog", self._pb.UnregisterRequest(registered_id=catalog_id), empty_pb2.Empty)

    def analyze(self, sql: str, options_proto, catalog_id: int) -> None:
        """Resolve and type-check ``sql`` (one statement); raise :class:`ZetaSQLError` if
        ZetaSQL rejects it."""
        req = self._pb.AnalyzeRequest(options=options_proto, registered_catalog_id=catalog_id, sql_statement=sql)
        self.call("Analyze", req, self._pb.AnalyzeResponse)


def zetasql_service() -> ZetaSQL:
    """The process-wide analyzer (started on first use)."""
    global _INSTANCE
    with _LOCK:
        if _INSTANCE is None:
            _INSTANCE = ZetaSQL()
        return _INSTANCE


# =========================================================================================
# ZetaSQL: BigQuery language options, catalog, analysis
# =========================================================================================
# Released ZetaSQL features BigQuery does not have (removed from the maximum set).
_NOT_IN_BIGQUERY = {
    "FEATURE_AGGREGATE_FILTERING",  # COUNT(*) FILTER (WHERE ...)
    "FEATURE_JSON_TYPE_COMPARISON",  # JSON = JSON
    "FEATURE_ARRAY_EQUALITY",
    "FEATURE_DML_RETURNING",
    "FEATURE_INSERT_ON_CONFLICT_CLAUSE",
    "FEATURE_FOR_UPDATE",
    "FEATURE_LATERAL_JOIN",
    "FEATURE_INLINE_LAMBDA_ARGUMENT",
    "FEATURE_SAFE_FUNCTION_CALL_WITH_LAMBDA_ARGS",
    "FEATURE_CHAINED_FUNCTION_CALLS",
    "FEATURE_WITH_EXPRESSION",
    "FEATURE_LITERAL_CONCATENATION",
    "FEATURE_UUID_TYPE",
    "FEATURE_EXTENDED_TYPES",
    "FEATURE_TIMESTAMP_NANOS",
    "FEATURE_TIMESTAMP_PICOS",
    "FEATURE_TIMESTAMP_PRECISION",
    "FEATURE_IMPLICIT_COERCION_STRING_LITERAL_TO_BYTES",
    "FEATURE_NULLIFZERO_ZEROIFNULL",
    "FEATURE_MULTILEVEL_AGGREGATION",
    "FEATURE_MULTILEVEL_AGGREGATION_ON_UDAS",
    "FEATURE_ENABLE_MEASURES",
    "FEATURE_MULTIWAY_UNNEST",
    "FEATURE_STRUCT_POSITIONAL_ACCESSOR",
    "FEATURE_EXPERIMENTAL_MODULES",
    "FEATURE_GENERATED_COLUMNS",
    "FEATURE_CHECK_CONSTRAINT",
    "FEATURE_IDENTITY_COLUMNS",
    "FEATURE_GENERATED_BY_DEFAULT",
    "FEATURE_ALTER_COLUMN_SET_GENERATED_AS_IDENTITY",
    "FEATURE_ALTER_COLUMN_DROP_GENERATED",
    "FEATURE_NESTED_UPDATE_DELETE_WITH_OFFSET",
    "FEATURE_ARRAY_ELEMENTS_WITH_SET",
    "FEATURE_CORRELATED_REFS_IN_NESTED_DML",
    "FEATURE_ALLOW_SLASH_PATHS",
    "FEATURE_PIPE_FORK",
    "FEATURE_PIPE_TEE",
    "FEATURE_PIPE_IF",
    "FEATURE_PIPE_INSERT",
    "FEATURE_PIPE_CREATE_TABLE",
    "FEATURE_MATCH_RECOGNIZE",
    "FEATURE_PROTO_MAPS",
    "FEATURE_PROTO_EXTENSIONS_WITH_NEW",
    "FEATURE_PROTO_EXTENSIONS_WITH_SET",
    "FEATURE_BRACED_PROTO_CONSTRUCTORS",
    "FEATURE_EXTRACT_FROM_PROTO",
    "FEATURE_REPLACE_FIELDS",
    "FEATURE_FILTER_FIELDS",
}


class BigQueryGate:
    """ZetaSQL with BigQuery's language options; one registered catalog per table set."""

    def __init__(self) -> None:
        from zetasql.wasi._pb2.zetasql.proto import options_pb2
        from zetasql.wasi._pb2.zetasql.public import options_pb2 as public_options

        self.service = zetasql_service()
        language = self.service.maximum_language_options()
        keep = [
            f for f in language.enabled_language_features
            if public_options.LanguageFeature.Name(f) not in _NOT_IN_BIGQUERY
            and not public_options.LanguageFeature.Name(f).startswith("FEATURE_SQL_GRAPH")
        ]
        del language.enabled_language_features[:]
        language.enabled_language_features.extend(keep)
        language.product_mode = public_options.PRODUCT_EXTERNAL
        language.name_resolution_mode = public_options.NAME_RESOLUTION_DEFAULT
        del language.supported_statement_kinds[:]  # empty: every statement kind
        self.language = language
        self._options_pb = options_pb2
        self._public_options = public_options
        self._catalogs: dict[Any, int] = {}

    def features(self) -> set[str]:
        from zetasql.wasi._pb2.zetasql.public import options_pb2 as public_options

        return {public_options.LanguageFeature.Name(f) for f in self.language.enabled_language_features}

    # ---- types and catalog --------------------------------------------------------------
    @staticmethod
    def type_proto(bq_type: str):
        from zetasql.wasi._pb2.zetasql.public import type_pb2

        kinds = {
            "STRING": type_pb2.TYPE_STRING, "INT64": type_pb2.TYPE_INT64, "FLOAT64": type_pb2.TYPE_DOUBLE,
            "BOOL": type_pb2.TYPE_BOOL, "TIMESTAMP": type_pb2.TYPE_TIMESTAMP, "DATE": type_pb2.TYPE_DATE,
            "JSON": type_pb2.TYPE_JSON, "NUMERIC": type_pb2.TYPE_NUMERIC, "BYTES": type_pb2.TYPE_BYTES,
        }
        array = re.fullmatch(r"ARRAY<(\w+)>", bq_type)
        if array:
            return type_pb2.TypeProto(
                type_kind=type_pb2.TYPE_ARRAY,
                array_type=type_pb2.ArrayTypeProto(element_type=BigQueryGate.type_proto(array.group(1))),
            )
        return type_pb2.TypeProto(type_kind=kinds[bq_type])

    def _catalog_id(self, tables: Mapping[tuple[str, str], Schema]) -> int:
        key = tuple(sorted((k, tuple(v)) for k, v in tables.items()))
        if key in self._catalogs:
            return self._catalogs[key]
        from zetasql.wasi._pb2.zetasql.proto import simple_catalog_pb2
        from zetasql.wasi._pb2.zetasql.public import simple_table_pb2

        def table(name: str, columns: Schema):
            return simple_table_pb2.SimpleTableProto(
                name=name,
                column=[
                    simple_table_pb2.SimpleColumnProto(name=c, type=self.type_proto(t), is_writable_column=True)
                    for c, t in columns
                ],
            )

        root = simple_catalog_pb2.SimpleCatalogProto(name="bigquery")
        root.builtin_function_options.language_options.CopyFrom(self.language)
        by_dataset: dict[str, list] = {}
        for (dataset, name), columns in sorted(tables.items()):
            root.table.append(table(f"{dataset}.{name}", columns))  # `dataset.table`
            by_dataset.setdefault(dataset, []).append(table(name, columns))  # dataset.table
        for dataset, dataset_tables in by_dataset.items():
            root.catalog.append(simple_catalog_pb2.SimpleCatalogProto(name=dataset, table=dataset_tables))
        catalog_id = self.service.register_catalog(root)
        self._catalogs[key] = catalog_id
        return catalog_id

    # ---- analysis -------------------------------------------------------------------------
    def analyze(self, sql: str, params: Mapping[str, str], tables: Mapping[tuple[str, str], Schema]) -> None:
        """Raise ``ZetaSQLError`` unless ``sql`` resolves and type-checks on BigQuery."""
        options = self._options_pb.AnalyzerOptionsProto(language_options=self.language)
        options.default_timezone = "UTC"
        options.error_message_mode = self._public_options.ERROR_MESSAGE_MULTI_LINE_WITH_CARET
        for name, typ in params.items():
            options.query_parameters.append(
                self._options_pb.AnalyzerOptionsProto.QueryParameterProto(name=name, type=self.type_proto(typ))
            )
        self.service.analyze(sql, options, self._catalog_id(tables))

    def check(self, statement: Any) -> None:
        """ZetaSQL's analysis plus BigQuery's table rules ZetaSQL leaves to the engine."""
        self.analyze(statement.sql, statement.params, statement.tables)
        problems = bigquery_table_rules(statement.sql)
        if problems:
            raise ZetaSQLError("; ".join(problems))


_CREATE = re.compile(r"^\s*CREATE (?:OR REPLACE )?TABLE (?:IF NOT EXISTS )?\S+ \((?P<cols>.*?)\)"
                     r"(?: PARTITION BY (?P<part>.+?))?(?: CLUSTER BY (?P<cluster>.+?))?(?: OPTIONS.*)?\s*$", re.S)
_CLUSTER_TYPES = {"STRING", "INT64", "DATE", "TIMESTAMP", "DATETIME", "BOOL", "NUMERIC", "BIGNUMERIC", "GEOGRAPHY"}


def bigquery_table_rules(sql: str) -> list[str]:
    """BigQuery's rules on ``CREATE TABLE (...) PARTITION BY / CLUSTER BY`` that ZetaSQL
    does not check: the partition expression is a DATE / TIMESTAMP / DATETIME column,
    ``DATE(timestamp)`` or a ``{DATE,TIMESTAMP,DATETIME}_TRUNC`` of a column of that type;
    at most four clustering columns, of a clusterable type."""
    m = _CREATE.match(sql)
    if not m:
        return []
    types = {name: typ for name, typ in re.findall(r"`?(\w+)`?\s+([A-Z0-9]+)", m.group("cols"))}
    problems = []
    part = (m.group("part") or "").strip()
    if part:
        col = re.fullmatch(r"`?(\w+)`?", part)
        date_of = re.fullmatch(r"DATE\(\s*`?(\w+)`?\s*\)", part, re.I)
        trunc = re.fullmatch(r"(DATE|TIMESTAMP|DATETIME)_TRUNC\(\s*`?(\w+)`?\s*,\s*(\w+)\s*\)", part, re.I)
        if col:
            ok = types.get(col.group(1)) in ("DATE", "TIMESTAMP", "DATETIME")
        elif date_of:
            ok = types.get(date_of.group(1)) in ("TIMESTAMP", "DATETIME")
        elif trunc:
            ok = types.get(trunc.group(2)) == trunc.group(1).upper()
        else:
            ok = False
        if not ok:
            problems.append(f"PARTITION BY {part}: not a BigQuery time-unit partitioning of a DATE/TIMESTAMP column")
    cluster = [c.strip().strip("`") for c in (m.group("cluster") or "").split(",") if c.strip()]
    if len(cluster) > 4:
        problems.append(f"CLUSTER BY {cluster}: BigQuery allows at most 4 clustering columns")
    for c in cluster:
        if types.get(c) not in _CLUSTER_TYPES:
            problems.append(f"CLUSTER BY {c}: type {types.get(c)} cannot be clustered on BigQuery")
    return problems


if __name__ == "__main__":  # warm the cache: python -m analytics_platform_tests.bigquery_analyzer
    zetasql_service()
    print(f"ZetaSQL compiled module cached in {_cache_dir()}", file=sys.stderr)
