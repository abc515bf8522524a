"""The repository's dagster.yaml: SQLite with nothing set, PostgreSQL from DAGSTER_PG_*,
and a clear failure in prod without PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

from analytics_platform.settings import SettingsError

REPO = Path(__file__).resolve().parents[2]


def _instance_from_repo_yaml(tmp_path: Path) -> DagsterInstance:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def _clear_pg_env(monkeypatch):
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.delenv(name, raising=False)


def test_local_default_is_sqlite_under_the_data_dir(tmp_path, monkeypatch):
    _clear_pg_env(monkeypatch)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("ANALYTICS_ENV", "local")
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(tmp_path / "data"))
    with _instance_from_repo_yaml(tmp_path) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert (tmp_path / "data" / "dagster_home" / "history").exists()
        # the queued run coordinator and its Mixpanel limits come from the same file
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": "analytics_platform/mixpanel_export", "limit": 2} in limits


def test_prod_without_postgres_fails_naming_the_variables(tmp_path, monkeypatch):
    _clear_pg_env(monkeypatch)
    monkeypatch.setenv("ANALYTICS_ENV", "prod")
    with pytest.raises(SettingsError, match="DAGSTER_PG_HOST"):
        with _instance_from_repo_yaml(tmp_path) as instance:
            instance.run_storage  # noqa: B018


def test_postgres_storage_from_environment(tmp_path, monkeypatch, postgres_url):
    url = sa.engine.make_url(postgres_url)
    _clear_pg_env(monkeypatch)
    monkeypatch.setenv("ANALYTICS_ENV", "prod")
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", url.username)
    if url.password:
        monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password)
    monkeypatch.setenv("DAGSTER_PG_DB", url.database)
    with _instance_from_repo_yaml(tmp_path) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        # the serialised ref (what run workers get) rebuilds the same storage
        ref = instance.get_ref()
        with DagsterInstance.from_ref(ref) as again:
            assert type(again.run_storage).__name__ == "PostgresRunStorage"
