"""Dagster instance storage chosen from the environment (used by the top-level dagster.yaml).

* ``DAGSTER_PG_HOST`` set: dagster-postgres run/event/schedule storage from the
  ``DAGSTER_PG_*`` variables (psycopg2 scheme; the password stays an env reference).
* unset and ``ANALYTICS_ENV=prod``: fail, naming the variables to set.
* unset otherwise (the local default): SQLite under ``$DAGSTER_HOME`` or
  ``$ANALYTICS_DATA_DIR/dagster_home``, so CLI commands run from the repository root
  need no running service and their runs show up in `make dev`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from dagster import Field, StringSource
from dagster._core.storage.base_storage import DagsterStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from analytics_platform.settings import Settings, SettingsError, get_settings


def postgres_storage_config(settings: Settings) -> dict[str, Any]:
    """dagster-postgres ``postgres_db`` config; the password is an env reference."""
    db: dict[str, Any] = {
        "hostname": settings.dagster_pg_host,
        "port": settings.dagster_pg_port,
        "username": settings.dagster_pg_username,
        "db_name": settings.dagster_pg_db,
        # SQLAlchemy 2.1 looks for psycopg 3 unless told otherwise.
        "scheme": "postgresql+psycopg2",
    }
    if settings.dagster_pg_password:
        db["password"] = {"env": "DAGSTER_PG_PASSWORD"}
    return {"postgres_db": db}


def sqlite_base_dir(settings: Settings, configured: str | None) -> str:
    base = configured or settings.dagster_home or str(settings.data_dir / "dagster_home")
    path = Path(base).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


class PlatformInstanceStorage(DagsterStorage, ConfigurableClass):
    """Factory: ``from_config_value`` returns the real Postgres or SQLite storage, so an
    instance of this class itself is never created (its properties are never used)."""

    @property
    def event_log_storage(self):  # pragma: no cover - never instantiated
        raise NotImplementedError

    @property
    def run_storage(self):  # pragma: no cover
        raise NotImplementedError

    @property
    def schedule_storage(self):  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def config_type(cls):
        return {"sqlite_base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: dict) -> DagsterStorage:
        settings = get_settings()
        if settings.dagster_pg_host:
            missing = [
                name
                for name, value in (
                    ("DAGSTER_PG_USERNAME", settings.dagster_pg_username),
                    ("DAGSTER_PG_DB", settings.dagster_pg_db),
                )
                if not value
            ]
            if missing:
                raise SettingsError(
                    f"DAGSTER_PG_HOST is set, so Dagster storage is PostgreSQL: set {', '.join(missing)}"
                )
            data = ConfigurableClassData(
                "dagster_postgres", "DagsterPostgresStorage", yaml.dump(postgres_storage_config(settings))
            )
            return data.rehydrate(DagsterStorage)
        if settings.is_prod:
            raise SettingsError(
                "ANALYTICS_ENV=prod needs Dagster's PostgreSQL storage: set DAGSTER_PG_HOST, "
                "DAGSTER_PG_PORT, DAGSTER_PG_USERNAME, DAGSTER_PG_PASSWORD and DAGSTER_PG_DB"
            )
        base_dir = sqlite_base_dir(settings, config_value.get("sqlite_base_dir"))
        data = ConfigurableClassData(
            "dagster._core.storage.sqlite_storage", "DagsterSqliteStorage", yaml.dump({"base_dir": base_dir})
        )
        return data.rehydrate(DagsterStorage)
