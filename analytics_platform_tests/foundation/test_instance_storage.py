"""The Dagster instance files are plain dagster.yaml, and the package uses no private Dagster
module.

* ./dagster.yaml, the local instance (`make demo` / `make dev` copy it to $DAGSTER_HOME):
  Dagster's default SQLite storage under DAGSTER_HOME, the run queue and its limits.
* ./dagster.prod.yaml, the production instance (the image's $DAGSTER_HOME/dagster.yaml):
  PostgreSQL from DAGSTER_PG_* (a missing variable fails naming it), compute logs in GCS.
* Both say the same about the run queue, pools, retries, monitoring, schedules, sensors.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance

REPO = Path(__file__).resolve().parents[2]
LOCAL_YAML, PROD_YAML = REPO / "dagster.yaml", REPO / "dagster.prod.yaml"
SHARED_SECTIONS = ("concurrency", "run_retries", "run_monitoring", "schedules", "sensors", "telemetry")


def _home_with(tmp_path: Path, source: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(source, home / "dagster.yaml")
    return home


def _clear_pg_env(monkeypatch):
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.delenv(name, raising=False)


def test_local_instance_is_sqlite_under_dagster_home_with_the_run_queue(tmp_path, monkeypatch):
    _clear_pg_env(monkeypatch)
    home = _home_with(tmp_path, LOCAL_YAML)
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert (home / "history").exists()
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": "analytics_platform/mixpanel_export", "limit": 2} in limits
        assert instance.run_retries_enabled


def test_local_and_production_instances_agree_on_everything_but_storage():
    local, prod = yaml.safe_load(LOCAL_YAML.read_text()), yaml.safe_load(PROD_YAML.read_text())
    assert {k: local.get(k) for k in SHARED_SECTIONS} == {k: prod.get(k) for k in SHARED_SECTIONS}
    assert set(local) == set(SHARED_SECTIONS)  # the local file: no storage, no compute logs (defaults)
    assert set(prod) == set(SHARED_SECTIONS) | {"storage", "compute_logs"}


def test_production_instance_without_postgres_fails_naming_the_variable(tmp_path, monkeypatch):
    _clear_pg_env(monkeypatch)
    home = _home_with(tmp_path, PROD_YAML)
    with pytest.raises(Exception, match="DAGSTER_PG_HOST"):
        with DagsterInstance.from_config(str(home)) as instance:
            instance.run_storage  # noqa: B018


def test_production_storage_is_postgres_from_environment(tmp_path, monkeypatch, postgres_url):
    import sqlalchemy as sa

    url = sa.engine.make_url(postgres_url)
    _clear_pg_env(monkeypatch)
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", url.username)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", url.database)
    config = yaml.safe_load(PROD_YAML.read_text())
    del config["compute_logs"]  # GCS: exercised in ops/test_instance_yaml.py with a GCS emulator
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        # the serialised ref (what run workers get) keeps the password an env reference
        ref = instance.get_ref()
        assert (url.password or "\0") not in str(ref.storage_data.config_yaml)
        with DagsterInstance.from_ref(ref) as again:
            assert type(again.run_storage).__name__ == "PostgresRunStorage"


def _private_imports(source: str, label: str) -> list[str]:
    """``dagster._x`` / ``dagster_*._x`` / ``dagster_shared`` imports of one module."""
    found = []
    for node in ast.walk(ast.parse(source, label)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "dagster" or parts[0].startswith("dagster_"):
                if any(p.startswith("_") for p in parts[1:]) or parts[0] == "dagster_shared":
                    found.append(f"{label}:{node.lineno}: {name}")
    return found


def test_the_package_imports_no_private_dagster_module():
    modules = sorted((REPO / "analytics_platform").rglob("*.py"))
    assert len(modules) > 30
    hits = [hit for m in modules for hit in _private_imports(m.read_text(), str(m.relative_to(REPO)))]
    assert hits == []
    # the check sees what it looks for
    sample = "from dagster._core.test_utils import freeze_time\nimport dagster_shared.seven\nimport dagster as dg\n"
    assert len(_private_imports(sample, "sample.py")) == 3
