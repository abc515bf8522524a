"""Google's ZetaSQL analyzer (PyPI ``zetasql``, a WASM build run by wasmtime), started once
per process, with the compiled module cached on disk.

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
import sys
import tempfile
import threading
from importlib import metadata
from pathlib import Path
from typing import Optional

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


if __name__ == "__main__":  # warm the cache: python -m analytics_platform_tests.zetasql_service
    zetasql_service()
    print(f"ZetaSQL compiled module cached in {_cache_dir()}", file=sys.stderr)
