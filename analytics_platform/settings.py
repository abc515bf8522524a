"""The only module that reads ``os.environ``.

Every variable of design.md's environment contract is declared ONCE, as a field of
:class:`Settings`: ``field: type = var(ENV_NAME, default, parser, secret=...)``.
``get_settings()`` is the one generic loader: it reads the environment when called (never
at import time, so ``dagster definitions validate`` works with nothing set), parses each
set variable with its parser (whose error names the variable) and keeps the default for
an unset or empty one.  Derived values (the DuckDB file under the data directory, the
Mixpanel hosts of the region) are filled once, in ``Settings.__post_init__``.  Resources
call :meth:`Settings.require` at set-up to fail fast with a message naming the variable.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

MIXPANEL_EXPORT_HOSTS = {
    "us": "https://data.mixpanel.com",
    "eu": "https://data-eu.mixpanel.com",
    "in": "https://data-in.mixpanel.com",
}
MIXPANEL_API_HOSTS = {
    "us": "https://api.mixpanel.com",
    "eu": "https://api-eu.mixpanel.com",
    "in": "https://api-in.mixpanel.com",
}


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable to fix."""


# ----------------------------------------------------------------------------- parsers
# A parser turns the raw (non-empty) value of variable ``name`` into the setting, raising
# SettingsError naming the variable; returning None keeps the declared default.
Parser = Callable[[str, str], Any]


def _text(name: str, raw: str) -> str:
    return raw


def _url(name: str, raw: str) -> str:
    return raw.rstrip("/")


def _path(name: str, raw: str) -> Path:
    return Path(raw)


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _int(name: str, raw: str) -> Optional[int]:
    if raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _float(name: str, raw: str) -> Optional[float]:
    if raw.strip() == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _date(name: str, raw: str) -> str:
    try:
        dt.date.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"{name} must be YYYY-MM-DD, got {raw!r}") from None
    return raw


def _timezone(name: str, raw: str) -> str:
    """An IANA time zone name (``Europe/Berlin``), checked against the zone database."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    value = raw.strip()
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"{name} must be an IANA time zone name such as UTC or America/Los_Angeles, got {raw!r}") from None
    return value


def _one_of(choices: Sequence[str], expected: str) -> Parser:
    """Lower-cased value that must be one of ``choices`` (``expected`` says which)."""

    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise SettingsError(f"{name} must be {expected} got {value!r}")
        return value

    return parse


def _url_password(url: str) -> str:
    """The secret part of a database URL: its password (an unparsable URL is all secret)."""
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:  # noqa: BLE001 - an unparsable URL is itself secret
        password = None
    return password or url


# A secret is never shown (repr, logs, metadata); ``secret`` may also be a function that
# returns the part of the value to redact (e.g. the password of a URL).
Secret = Union[bool, Callable[[str], str]]


def var(env: str, default: Any = None, parse: Parser = _text, *, secret: Secret = False) -> Any:
    """Declare the setting read from environment variable ``env``."""
    return field(
        default=default,
        repr=not secret,
        metadata={"env": env, "parse": parse, "secret": secret},
    )


# ---------------------------------------------------------------------------- contract
@dataclass(frozen=True)
class Settings:
    analytics_env: str = var("ANALYTICS_ENV", "local", _one_of(("local", "prod"), "'local' or 'prod',"))
    data_dir: Path = var("ANALYTICS_DATA_DIR", Path(".analytics_data"), _path)
    duckdb_path: Path = var("DUCKDB_PATH", None, _path)  # None: {data_dir}/warehouse.duckdb
    # warehouse
    gcp_project_id: Optional[str] = var("GCP_PROJECT_ID")
    bigquery_location: str = var("BIGQUERY_LOCATION", "US")
    bigquery_emulator_host: Optional[str] = var("BIGQUERY_EMULATOR_HOST")
    bigquery_dataset: str = var("BIGQUERY_DATASET", "mixpanel_data")
    bigquery_table: str = var("BIGQUERY_TABLE", "mixpanel_events")
    cohort_dataset: str = var("COHORT_DATASET", "peerplay")
    posthog_dataset_id: str = var("POSTHOG_DATASET_ID", "posthog_etl")
    firebase_dataset_id: str = var("FIREBASE_DATASET_ID", "firebase_etl_prod")
    posthog_aggregated_dataset_id: str = var("POSTHOG_AGGREGATED_DATASET_ID", "posthog_aggregated")
    # application database
    app_database_url: Optional[str] = var("APP_DATABASE_URL", secret=_url_password)
    # mixpanel
    mixpanel_project_id: Optional[str] = var("MIXPANEL_PROJECT_ID")
    mixpanel_service_account_username: Optional[str] = var("MIXPANEL_SERVICE_ACCOUNT_USERNAME")
    mixpanel_service_account_secret: Optional[str] = var("MIXPANEL_SERVICE_ACCOUNT_SECRET", secret=True)
    mixpanel_api_secret: Optional[str] = var("MIXPANEL_API_SECRET", secret=True)
    mixpanel_project_token: Optional[str] = var("MIXPANEL_PROJECT_TOKEN", secret=True)
    mixpanel_region: str = var("MIXPANEL_REGION", "us", _one_of(tuple(MIXPANEL_EXPORT_HOSTS), "one of us, eu, in;"))
    mixpanel_export_url: str = var("MIXPANEL_EXPORT_URL", None, _url)  # None: the region's host
    mixpanel_api_url: str = var("MIXPANEL_API_URL", None, _url)  # None: the region's host
    mixpanel_late_days: int = var("MIXPANEL_LATE_DAYS", 2, _int)
    # projects created before 2023 read from_date/to_date in this zone (partitions stay UTC)
    mixpanel_project_timezone: str = var("MIXPANEL_PROJECT_TIMEZONE", "UTC", _timezone)
    # the export budget shared by every run (resources/export_budget.py)
    mixpanel_export_queries_per_hour: int = var("MIXPANEL_EXPORT_QUERIES_PER_HOUR", 60, _int)
    mixpanel_export_queries_per_second: int = var("MIXPANEL_EXPORT_QUERIES_PER_SECOND", 3, _int)
    mixpanel_export_refresh_reserve: int = var("MIXPANEL_EXPORT_REFRESH_RESERVE", 8, _int)
    mixpanel_export_budget_max_wait_seconds: float = var("MIXPANEL_EXPORT_BUDGET_MAX_WAIT_SECONDS", 600.0, _float)
    # completeness check: a re-export may add at most this % of a day's rows (export log)
    mixpanel_late_rows_max_percent: float = var("MIXPANEL_LATE_ROWS_MAX_PERCENT", 1.0, _float)
    # slack
    slack_bot_token: Optional[str] = var("SLACK_BOT_TOKEN", secret=True)
    slack_webhook_url: Optional[str] = var("SLACK_WEBHOOK_URL", secret=True)
    slack_api_url: Optional[str] = var("SLACK_API_URL")
    slack_default_channel: str = var("SLACK_DEFAULT_CHANNEL", "#data-alerts")
    # firebase / firestore
    firebase_project_id: Optional[str] = var("FIREBASE_PROJECT_ID")
    firestore_emulator_host: Optional[str] = var("FIRESTORE_EMULATOR_HOST")
    firebase_credentials_file: Optional[str] = var("FIREBASE_CREDENTIALS_FILE")
    firebase_service_account_json: Optional[str] = var("FIREBASE_SERVICE_ACCOUNT_JSON", secret=True)
    firebase_root_collection: str = var("FIREBASE_ROOT_COLLECTION", "app_usage_events")
    firebase_events_subcollection: str = var("FIREBASE_EVENTS_SUBCOLLECTION", "events")
    engagement_dataset: str = var("ENGAGEMENT_DATASET", "engagement")  # warehouse: Firestore mirror, aggregates
    # domain settings
    events_config_path: Path = var("EVENTS_CONFIG_PATH", Path("config/events_config.json"), _path)
    events_config_inline: Optional[str] = var("EVENTS_CONFIG")
    cohort_marker: str = var("COHORT_MARKER", "state_loss_temp_user_cohort_v1")
    inactivity_threshold_days: int = var("INACTIVITY_THRESHOLD_DAYS", 7, _int)
    kpi_lookback_days: int = var("KPI_LOOKBACK_DAYS", 30, _int)
    metrics_default_target: float = var("METRICS_DEFAULT_TARGET", 0.0, _float)
    metrics_use_bayesian: bool = var("METRICS_USE_BAYESIAN", False, _bool)
    metrics_churn_horizon_days: float = var("METRICS_CHURN_HORIZON_DAYS", 14.0, _float)
    dagster_webserver_url: str = var("DAGSTER_WEBSERVER_URL", "http://localhost:3000", _url)
    # Code references in the UI link to this repository (web URL) at this branch/tag/commit
    code_references_git_url: Optional[str] = var("CODE_REFERENCES_GIT_URL", None, _url)
    code_references_git_ref: str = var("CODE_REFERENCES_GIT_REF", "main")
    analytics_start_date: str = var("ANALYTICS_START_DATE", "2024-01-01", _date)
    # The production Dagster instance (dagster.prod.yaml reads these as env references)
    dagster_home: Optional[str] = var("DAGSTER_HOME")
    dagster_pg_host: Optional[str] = var("DAGSTER_PG_HOST")
    dagster_pg_port: int = var("DAGSTER_PG_PORT", 5432, _int)
    dagster_pg_username: Optional[str] = var("DAGSTER_PG_USERNAME")
    dagster_pg_password: Optional[str] = var("DAGSTER_PG_PASSWORD", secret=True)
    dagster_pg_db: Optional[str] = var("DAGSTER_PG_DB")
    dagster_compute_logs_bucket: Optional[str] = var("DAGSTER_COMPUTE_LOGS_BUCKET")

    def __post_init__(self) -> None:
        """Derived defaults, declared once (also for a ``Settings(...)`` built by hand)."""
        derived = {
            "duckdb_path": lambda: self.data_dir / "warehouse.duckdb",
            "mixpanel_export_url": lambda: MIXPANEL_EXPORT_HOSTS[self.mixpanel_region],
            "mixpanel_api_url": lambda: MIXPANEL_API_HOSTS[self.mixpanel_region],
        }
        for name, default in derived.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default())

    @property
    def is_prod(self) -> bool:
        return self.analytics_env == "prod"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def has_mixpanel_export_credentials(self) -> bool:
        return bool(
            (self.mixpanel_service_account_username and self.mixpanel_service_account_secret)
            or self.mixpanel_api_secret
        )

    def require(self, *names: str) -> None:
        """Fail with a message naming every variable (by its env name) that is unset."""
        missing = [n for n in names if not getattr(self, _ENV_TO_FIELD[n])]
        if missing:
            raise SettingsError(
                f"ANALYTICS_ENV={self.analytics_env} needs {', '.join(missing)} to be set "
                "(see README 'Configuration')."
            )


_VARIABLES = tuple(f for f in fields(Settings) if "env" in f.metadata)
# environment variable -> Settings field (every variable of the contract, in order)
_ENV_TO_FIELD = {f.metadata["env"]: f.name for f in _VARIABLES}
ENV_VARIABLES = tuple(_ENV_TO_FIELD)
# Names of the variables that hold secrets: never logged, never in metadata.
SECRET_VARIABLES = tuple(f.metadata["env"] for f in _VARIABLES if f.metadata["secret"])


def get_settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Read every setting from ``environ`` (default: ``os.environ``) and validate it."""
    env = os.environ if environ is None else environ
    values = {}
    for f in _VARIABLES:
        raw = env.get(f.metadata["env"])
        if raw in (None, ""):
            continue  # unset or empty: the declared (or derived) default
        value = f.metadata["parse"](f.metadata["env"], raw)
        if value is not None:
            values[f.name] = value
    return Settings(**values)


def secret_values(settings: Optional[Settings] = None) -> list[str]:
    """The values of every secret that is set, for redaction."""
    s = settings or get_settings()
    values = []
    for f in _VARIABLES:
        secret, value = f.metadata["secret"], getattr(s, f.name)
        if secret and value:
            values.append(secret(value) if callable(secret) else value)
    return [v for v in values if v and len(v) >= 4]


def redact(text: str, settings: Optional[Settings] = None, *, also: Sequence[Optional[str]] = ()) -> str:
    """Replace every secret value in ``text`` with ``***``: the environment's secrets
    (``settings``, default: the current environment) and the values in ``also`` (a
    resource's own credentials).  The one redaction helper of the platform; an invalid
    environment never hides the text it was asked to redact."""
    values = [v for v in also if v and len(v) >= 4]
    try:
        values += secret_values(settings)
    except SettingsError:
        pass
    for value in sorted(set(values), key=len, reverse=True):
        text = text.replace(value, "***")
    return text
