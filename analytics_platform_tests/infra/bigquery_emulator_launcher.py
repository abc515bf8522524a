"""Start the BigQuery API emulator (``local-bigquery``) for the test suite.

Runs under the Python 3.13 side environment created by ``.ci/setup_bigquery_emulator.sh``
(NOT the project's venv)::

    .venv-bq/bin/python analytics_platform_tests/infra/bigquery_emulator_launcher.py \
        --data-dir /tmp/bq --ready-file /tmp/bq/ready

What it adds to ``local-bigquery serve``:

* DuckDB extensions come from the ``duckdb-extension-{icu,ducklake,spatial}`` wheels,
  installed once into ``<venv>/duckdb_extensions`` (nothing is downloaded at run time), and
  every ``duckdb.connect`` in the process uses that extension directory.
* ``--port 0`` (the default) binds a free port; the REST port actually bound is written to
  ``--ready-file`` once the server accepts requests, so the caller needs no port guessing.

Only the standard library, duckdb, uvicorn and local_bigquery are imported: this file must
not import anything from the project.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import sys
import threading

EXTENSIONS = ("icu", "ducklake", "spatial")


def extension_directory() -> pathlib.Path:
    return pathlib.Path(sys.prefix) / "duckdb_extensions"


def install_extensions(directory: pathlib.Path) -> None:
    """Install the wheel-shipped extensions into ``directory`` (idempotent)."""
    import duckdb

    version = duckdb.__version__
    for name in EXTENSIONS:
        module = importlib.import_module(f"duckdb_extension_{name}")
        files = sorted(pathlib.Path(module.__file__).parent.glob("extensions/*/*.duckdb_extension"))
        if not files:
            raise SystemExit(f"duckdb_extension_{name} ships no extension file")
        if list(directory.glob(f"v{version}/*/{name}.duckdb_extension")):
            continue
        con = duckdb.connect(config={"extension_directory": str(directory)})
        try:
            con.install_extension(str(files[0]))
        finally:
            con.close()


def patch_duckdb_connect(directory: pathlib.Path) -> None:
    """Make every ``duckdb.connect`` in this process use ``directory`` for extensions."""
    import duckdb

    original = duckdb.connect

    def connect(*args, **kwargs):
        config = dict(kwargs.pop("config", None) or {})
        config.setdefault("extension_directory", str(directory))
        config.setdefault("autoinstall_known_extensions", False)
        return original(*args, config=config, **kwargs)

    duckdb.connect = connect


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--data-dir", type=pathlib.Path, required=True)
    parser.add_argument("--project", default="local")
    parser.add_argument("--ready-file", type=pathlib.Path)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    os.environ["TZ"] = "UTC"
    directory = extension_directory()
    directory.mkdir(parents=True, exist_ok=True)
    install_extensions(directory)
    patch_duckdb_connect(directory)

    import uvicorn

    from local_bigquery.settings import settings

    args.data_dir.mkdir(parents=True, exist_ok=True)
    settings.bigquery_host = args.host
    settings.data_dir = args.data_dir
    settings.default_project_id = args.project

    from local_bigquery import app
    from local_bigquery.engine import database
    from local_bigquery.grpc import server as grpc_server_module

    database.connection()  # open the catalog now: fail here, not on the first request
    grpc_server, grpc_port = grpc_server_module.start(args.host, args.grpc_port)
    settings.grpc_port = grpc_port
    rest = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level)
    )

    def announce() -> None:
        while not rest.started:
            if rest.should_exit:
                return
            threading.Event().wait(0.02)
        port = rest.servers[0].sockets[0].getsockname()[1]
        line = f"{port} {grpc_port}\n"
        if args.ready_file:
            tmp = args.ready_file.with_suffix(".tmp")
            tmp.write_text(line)
            tmp.replace(args.ready_file)
        print(f"local-bigquery listening on http://{args.host}:{port} (grpc {grpc_port})", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        rest.run()
    finally:
        grpc_server.stop(None)


if __name__ == "__main__":
    main()
