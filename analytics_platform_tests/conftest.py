"""Session fixtures shared by every test (names are a contract for the domain tests).

Real components, never mocks (design.md principle 4):

===================  ========  ==========================================================
fixture              scope     gives
===================  ========  ==========================================================
postgres_url         session   ``postgresql+psycopg2://`` URL of a throwaway PostgreSQL
app_db_url           function  URL of a fresh database on it, migrated (dropped afterwards)
app_db               function  ``AppDatabase(url=app_db_url)``
embedded_pg_dir      function  a fresh dir for ``AppDatabase(url=None, embedded_dir=...)``
firestore_emulator   session   ``"127.0.0.1:PORT"`` of the Firestore emulator
firestore_project    function  a unique project id (its data is cleared afterwards)
clear_firestore      function  ``clear_firestore(project_id)`` empties a project now
bigquery_emulator    session   ``"http://127.0.0.1:PORT"`` of the BigQuery API emulator
bq_warehouse         function  ``BigQueryWarehouse`` on the emulator, unique project
duckdb_warehouse     function  ``DuckDBWarehouse`` on ``tmp_path/"w.duckdb"``
warehouse            function  parametrized: ``duckdb`` and ``bigquery`` (marked)
===================  ========  ==========================================================

Servers start lazily (only when a test asks for them), once per session (per xdist
worker), each in its own process group, and are stopped at the end of the session.
Nothing is written to ``os.environ``: a test that needs e.g. ``FIRESTORE_EMULATOR_HOST``
sets it with ``monkeypatch.setenv``.

Tests that use the Firestore or BigQuery emulators are marked ``firestore`` /
``bigquery`` automatically (so ``-m "not bigquery"`` deselects them).  The BigQuery
emulator needs ``.ci/setup_bigquery_emulator.sh``; without it the tests fail, unless
``ANALYTICS_ALLOW_SKIP_BIGQUERY=1`` is set, which turns that into a skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from analytics_platform_tests.infra import bigquery as bq_infra
from analytics_platform_tests.infra import firestore as fs_infra
from analytics_platform_tests.infra import postgres as pg_infra

# Stub Mixpanel and Slack servers (`mixpanel_stub`, `slack_stub`) for every test package.
pytest_plugins = ["analytics_platform_tests.stubs.fixtures"]

ALLOW_SKIP_BIGQUERY_VAR = "ANALYTICS_ALLOW_SKIP_BIGQUERY"


# ---------------------------------------------------------------------------------------
# markers
# ---------------------------------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pyproject.toml; repeated here so a run with another ini still knows them.
    config.addinivalue_line("markers", "bigquery: needs the BigQuery API emulator (Python 3.13 side environment)")
    config.addinivalue_line("markers", "firestore: needs the Firestore emulator")
    config.addinivalue_line("markers", "slow: larger data sets")


@pytest.hookimpl(tryfirst=True)  # before the "-m" deselection sees the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by the emulators they use (directly or through other fixtures)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"bigquery_emulator", "bq_warehouse"}:
            item.add_marker(pytest.mark.bigquery)
        if names & {"firestore_emulator", "firestore_project"}:
            item.add_marker(pytest.mark.firestore)


# ---------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def _postgres_server() -> Iterator[pg_infra.PostgresServer]:
    server = pg_infra.start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(_postgres_server: pg_infra.PostgresServer) -> str:
    """SQLAlchemy URL (``postgresql+psycopg2://``) of the session's throwaway PostgreSQL.

    Its ``postgres`` database is shared by the whole session: prefer ``app_db_url``.
    The server's default time zone is America/New_York (not UTC) on purpose.
    """
    return _postgres_server.url


@pytest.fixture
def app_db_url(_postgres_server: pg_infra.PostgresServer) -> Iterator[str]:
    """A fresh database (``test_<uuid>``) on the session server, migrated to the newest
    revision of analytics_platform.migrations (as a deployment is); dropped afterwards."""
    from analytics_platform import migrations

    name, url = _postgres_server.create_database("test")
    migrations.upgrade(url)
    yield url
    try:
        _postgres_server.drop_database(name)
    except Exception:  # noqa: BLE001 - never fail a test on clean-up
        pass


@pytest.fixture
def embedded_pg_dir() -> Iterator[Path]:
    """A not-yet-existing directory for ``AppDatabase(url=None, embedded_dir=...)``.

    It lives under /tmp, NOT under ``tmp_path``: as root, pgserver runs PostgreSQL as the
    ``pgserver`` user, and every pytest start chmods ``/tmp/pytest-of-root`` to 0700,
    which would lock a running server out of its own files.  The server is stopped and
    the directory removed afterwards.
    """
    base = Path(tempfile.mkdtemp(prefix="analytics-embedded-pg-"))
    directory = base / "data"
    try:
        yield directory
    finally:
        pg_infra.stop_embedded_postgres(directory)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def app_db(app_db_url: str):
    """``AppDatabase`` on ``app_db_url``."""
    from analytics_platform.resources.app_db import AppDatabase

    db = AppDatabase(url=app_db_url)
    yield db
    if db._engine is not None:  # release the pool before the database is dropped
        db._engine.dispose()


# ---------------------------------------------------------------------------------------
# Firestore emulator
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``"127.0.0.1:PORT"`` of a running Firestore emulator (for FIRESTORE_EMULATOR_HOST)."""
    try:
        emulator = fs_infra.start_firestore_emulator(tmp_path_factory.mktemp("firestore"))
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield emulator.host
    finally:
        emulator.stop()


@pytest.fixture
def firestore_project(firestore_emulator: str) -> Iterator[str]:
    """A project id unique to this test; the emulator keeps projects apart."""
    project_id = fs_infra.unique_project_id()
    yield project_id
    try:
        fs_infra.clear_firestore(firestore_emulator, project_id)
    except Exception:  # noqa: BLE001
        pass


@pytest.fixture
def clear_firestore(firestore_emulator: str) -> Callable[[str], None]:
    """``clear_firestore(project_id)``: delete every document of that project now."""
    return lambda project_id: fs_infra.clear_firestore(firestore_emulator, project_id)


# ---------------------------------------------------------------------------------------
# BigQuery API emulator
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL (``http://127.0.0.1:PORT``) of the BigQuery API emulator."""
    problem = bq_infra.emulator_available()
    if problem:
        message = (
            f"The BigQuery API emulator is not set up ({problem}). "
            f"Run `bash {bq_infra.SETUP_SCRIPT}` once (creates the Python 3.13 side "
            f"environment .venv-bq), or set {ALLOW_SKIP_BIGQUERY_VAR}=1 to skip these tests."
        )
        if os.environ.get(ALLOW_SKIP_BIGQUERY_VAR) == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    emulator = bq_infra.start_bigquery_emulator(tmp_path_factory.mktemp("bigquery"))
    try:
        yield emulator.endpoint
    finally:
        emulator.stop()


@pytest.fixture
def bq_warehouse(bigquery_emulator: str):
    """``BigQueryWarehouse`` on the emulator, in a project of its own (isolated data)."""
    from analytics_platform.resources.warehouse import BigQueryWarehouse

    wh = BigQueryWarehouse(project=f"test-project-{uuid.uuid4().hex[:8]}", emulator_host=bigquery_emulator)
    yield wh
    client = wh._client
    if client is not None:
        client.close()


@pytest.fixture
def duckdb_warehouse(tmp_path):
    """``DuckDBWarehouse`` on a fresh file ``tmp_path/"w.duckdb"``."""
    from analytics_platform.resources.warehouse import DuckDBWarehouse

    return DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))


@pytest.fixture(
    params=[
        pytest.param("duckdb", id="duckdb"),
        pytest.param("bigquery", id="bigquery", marks=pytest.mark.bigquery),
    ]
)
def warehouse(request: pytest.FixtureRequest):
    """The same test on both engines: DuckDB and BigQuery (emulator)."""
    if request.param == "duckdb":
        return request.getfixturevalue("duckdb_warehouse")
    return request.getfixturevalue("bq_warehouse")
