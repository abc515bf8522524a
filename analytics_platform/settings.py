"""The only module that reads ``os.environ``.

Every setting of design.md's environment contract is a field of :class:`Settings`.
``get_settings()`` reads the environment when called (never at import time), so
``dagster definitions validate`` works with nothing set.  Resources call
:meth:`Settings.require` at set-up to fail fast with a message naming the variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping, Optional

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

# Names of the variables that hold secrets: never logged, never in metadata.
SECRET_VARIABLES = (
    "MIXPANEL_SERVICE_ACCOUNT_SECRET",
    "MIXPANEL_API_SECRET",
    "MIXPANEL_PROJECT_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_WEBHOOK_URL",
    "FIREBASE_SERVICE_ACCOUNT_JSON",
    "APP_DATABASE_URL",
    "DAGSTER_PG_PASSWORD",
)


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable to fix."""


def _bool(name: str, raw: Optional[str], default: bool) -> bool:
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _int(name: str, raw: Optional[str], default: int) -> int:
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _float(name: str, raw: Optional[str], default: float) -> float:
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    analytics_env: str = "local"
    data_dir: Path = Path(".analytics_data")
    duckdb_path: Path = Path(".analytics_data/warehouse.duckdb")
    # warehouse
    gcp_project_id: Optional[str] = None
    bigquery_location: str = "US"
    bigquery_emulator_host: Optional[str] = None
    bigquery_dataset: str = "mixpanel_data"
    bigquery_table: str = "mixpanel_events"
    cohort_dataset: str = "peerplay"
    posthog_dataset_id: str = "posthog_etl"
    firebase_dataset_id: str = "firebase_etl_prod"
    posthog_aggregated_dataset_id: str = "posthog_aggregated"
    # application database
    app_database_url: Optional[str] = field(default=None, repr=False)
    # mixpanel
    mixpanel_project_id: Optional[str] = None
    mixpanel_service_account_username: Optional[str] = None
    mixpanel_service_account_secret: Optional[str] = field(default=None, repr=False)
    mixpanel_api_secret: Optional[str] = field(default=None, repr=False)
    mixpanel_project_token: Optional[str] = field(default=None, repr=False)
    mixpanel_region: str = "us"
    mixpanel_export_url: str = MIXPANEL_EXPORT_HOSTS["us"]
    mixpanel_api_url: str = MIXPANEL_API_HOSTS["us"]
    mixpanel_export_url_overridden: bool = False
    mixpanel_late_days: int = 2
    # slack
    slack_bot_token: Optional[str] = field(default=None, repr=False)
    slack_webhook_url: Optional[str] = field(default=None, repr=False)
    slack_api_url: Optional[str] = None
    slack_default_channel: str = "#data-alerts"
    # firebase / firestore
    firebase_project_id: Optional[str] = None
    firestore_emulator_host: Optional[str] = None
    firebase_credentials_file: Optional[str] = None
    firebase_service_account_json: Optional[str] = field(default=None, repr=False)
    firebase_root_collection: str = "app_usage_events"
    firebase_events_subcollection: str = "events"
    # domain settings
    events_config_path: Path = Path("config/events_config.json")
    events_config_inline: Optional[str] = None
    cohort_marker: str = "state_loss_temp_user_cohort_v1"
    inactivity_threshold_days: int = 7
    kpi_lookback_days: int = 30
    metrics_default_target: float = 0.0
    metrics_use_bayesian: bool = False
    metrics_churn_horizon_days: float = 14.0
    dagster_webserver_url: str = "http://localhost:3000"
    analytics_start_date: str = "2024-01-01"
    # Dagster instance storage (dagster.yaml): PostgreSQL when DAGSTER_PG_HOST is set
    dagster_home: Optional[str] = None
    dagster_pg_host: Optional[str] = None
    dagster_pg_port: int = 5432
    dagster_pg_username: Optional[str] = None
    dagster_pg_password: Optional[str] = field(default=None, repr=False)
    dagster_pg_db: Optional[str] = None

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


# environment variable -> Settings field, for messages and `require`.
_ENV_TO_FIELD = {
    "ANALYTICS_ENV": "analytics_env",
    "ANALYTICS_DATA_DIR": "data_dir",
    "DUCKDB_PATH": "duckdb_path",
    "GCP_PROJECT_ID": "gcp_project_id",
    "BIGQUERY_LOCATION": "bigquery_location",
    "BIGQUERY_EMULATOR_HOST": "bigquery_emulator_host",
    "BIGQUERY_DATASET": "bigquery_dataset",
    "BIGQUERY_TABLE": "bigquery_table",
    "COHORT_DATASET": "cohort_dataset",
    "POSTHOG_DATASET_ID": "posthog_dataset_id",
    "FIREBASE_DATASET_ID": "firebase_dataset_id",
    "POSTHOG_AGGREGATED_DATASET_ID": "posthog_aggregated_dataset_id",
    "APP_DATABASE_URL": "app_database_url",
    "MIXPANEL_PROJECT_ID": "mixpanel_project_id",
    "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "mixpanel_service_account_username",
    "MIXPANEL_SERVICE_ACCOUNT_SECRET": "mixpanel_service_account_secret",
    "MIXPANEL_API_SECRET": "mixpanel_api_secret",
    "MIXPANEL_PROJECT_TOKEN": "mixpanel_project_token",
    "MIXPANEL_REGION": "mixpanel_region",
    "MIXPANEL_EXPORT_URL": "mixpanel_export_url",
    "MIXPANEL_API_URL": "mixpanel_api_url",
    "MIXPANEL_LATE_DAYS": "mixpanel_late_days",
    "SLACK_BOT_TOKEN": "slack_bot_token",
    "SLACK_WEBHOOK_URL": "slack_webhook_url",
    "SLACK_API_URL": "slack_api_url",
    "SLACK_DEFAULT_CHANNEL": "slack_default_channel",
    "FIREBASE_PROJECT_ID": "firebase_project_id",
    "FIRESTORE_EMULATOR_HOST": "firestore_emulator_host",
    "FIREBASE_CREDENTIALS_FILE": "firebase_credentials_file",
    "FIREBASE_SERVICE_ACCOUNT_JSON": "firebase_service_account_json",
    "FIREBASE_ROOT_COLLECTION": "firebase_root_collection",
    "FIREBASE_EVENTS_SUBCOLLECTION": "firebase_events_subcollection",
    "EVENTS_CONFIG_PATH": "events_config_path",
    "EVENTS_CONFIG": "events_config_inline",
    "COHORT_MARKER": "cohort_marker",
    "INACTIVITY_THRESHOLD_DAYS": "inactivity_threshold_days",
    "KPI_LOOKBACK_DAYS": "kpi_lookback_days",
    "METRICS_DEFAULT_TARGET": "metrics_default_target",
    "METRICS_USE_BAYESIAN": "metrics_use_bayesian",
    "METRICS_CHURN_HORIZON_DAYS": "metrics_churn_horizon_days",
    "DAGSTER_WEBSERVER_URL": "dagster_webserver_url",
    "ANALYTICS_START_DATE": "analytics_start_date",
    "DAGSTER_HOME": "dagster_home",
    "DAGSTER_PG_HOST": "dagster_pg_host",
    "DAGSTER_PG_PORT": "dagster_pg_port",
    "DAGSTER_PG_USERNAME": "dagster_pg_username",
    "DAGSTER_PG_PASSWORD": "dagster_pg_password",
    "DAGSTER_PG_DB": "dagster_pg_db",
}
assert set(_ENV_TO_FIELD.values()) <= {f.name for f in fields(Settings)}


def get_settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Read every setting from ``environ`` (default: ``os.environ``) and validate it."""
    env = os.environ if environ is None else environ

    def raw(name: str) -> Optional[str]:
        value = env.get(name)
        return value if value not in (None, "") else None

    analytics_env = (raw("ANALYTICS_ENV") or "local").strip().lower()
    if analytics_env not in ("local", "prod"):
        raise SettingsError(f"ANALYTICS_ENV must be 'local' or 'prod', got {analytics_env!r}")
    data_dir = Path(raw("ANALYTICS_DATA_DIR") or ".analytics_data")
    region = (raw("MIXPANEL_REGION") or "us").strip().lower()
    if region not in MIXPANEL_EXPORT_HOSTS:
        raise SettingsError(f"MIXPANEL_REGION must be one of us, eu, in; got {region!r}")
    start_date = raw("ANALYTICS_START_DATE") or "2024-01-01"
    try:
        import datetime as _dt

        _dt.date.fromisoformat(start_date)
    except ValueError:
        raise SettingsError(f"ANALYTICS_START_DATE must be YYYY-MM-DD, got {start_date!r}") from None

    return Settings(
        analytics_env=analytics_env,
        data_dir=data_dir,
        duckdb_path=Path(raw("DUCKDB_PATH") or data_dir / "warehouse.duckdb"),
        gcp_project_id=raw("GCP_PROJECT_ID"),
        bigquery_location=raw("BIGQUERY_LOCATION") or "US",
        bigquery_emulator_host=raw("BIGQUERY_EMULATOR_HOST"),
        bigquery_dataset=raw("BIGQUERY_DATASET") or "mixpanel_data",
        bigquery_table=raw("BIGQUERY_TABLE") or "mixpanel_events",
        cohort_dataset=raw("COHORT_DATASET") or "peerplay",
        posthog_dataset_id=raw("POSTHOG_DATASET_ID") or "posthog_etl",
        firebase_dataset_id=raw("FIREBASE_DATASET_ID") or "firebase_etl_prod",
        posthog_aggregated_dataset_id=raw("POSTHOG_AGGREGATED_DATASET_ID") or "posthog_aggregated",
        app_database_url=raw("APP_DATABASE_URL"),
        mixpanel_project_id=raw("MIXPANEL_PROJECT_ID"),
        mixpanel_service_account_username=raw("MIXPANEL_SERVICE_ACCOUNT_USERNAME"),
        mixpanel_service_account_secret=raw("MIXPANEL_SERVICE_ACCOUNT_SECRET"),
        mixpanel_api_secret=raw("MIXPANEL_API_SECRET"),
        mixpanel_project_token=raw("MIXPANEL_PROJECT_TOKEN"),
        mixpanel_region=region,
        mixpanel_export_url=(raw("MIXPANEL_EXPORT_URL") or MIXPANEL_EXPORT_HOSTS[region]).rstrip("/"),
        mixpanel_api_url=(raw("MIXPANEL_API_URL") or MIXPANEL_API_HOSTS[region]).rstrip("/"),
        mixpanel_export_url_overridden=raw("MIXPANEL_EXPORT_URL") is not None,
        mixpanel_late_days=_int("MIXPANEL_LATE_DAYS", raw("MIXPANEL_LATE_DAYS"), 2),
        slack_bot_token=raw("SLACK_BOT_TOKEN"),
        slack_webhook_url=raw("SLACK_WEBHOOK_URL"),
        slack_api_url=raw("SLACK_API_URL"),
        slack_default_channel=raw("SLACK_DEFAULT_CHANNEL") or "#data-alerts",
        firebase_project_id=raw("FIREBASE_PROJECT_ID"),
        firestore_emulator_host=raw("FIRESTORE_EMULATOR_HOST"),
        firebase_credentials_file=raw("FIREBASE_CREDENTIALS_FILE"),
        firebase_service_account_json=raw("FIREBASE_SERVICE_ACCOUNT_JSON"),
        firebase_root_collection=raw("FIREBASE_ROOT_COLLECTION") or "app_usage_events",
        firebase_events_subcollection=raw("FIREBASE_EVENTS_SUBCOLLECTION") or "events",
        events_config_path=Path(raw("EVENTS_CONFIG_PATH") or "config/events_config.json"),
        events_config_inline=raw("EVENTS_CONFIG"),
        cohort_marker=raw("COHORT_MARKER") or "state_loss_temp_user_cohort_v1",
        inactivity_threshold_days=_int("INACTIVITY_THRESHOLD_DAYS", raw("INACTIVITY_THRESHOLD_DAYS"), 7),
        kpi_lookback_days=_int("KPI_LOOKBACK_DAYS", raw("KPI_LOOKBACK_DAYS"), 30),
        metrics_default_target=_float("METRICS_DEFAULT_TARGET", raw("METRICS_DEFAULT_TARGET"), 0.0),
        metrics_use_bayesian=_bool("METRICS_USE_BAYESIAN", raw("METRICS_USE_BAYESIAN"), False),
        metrics_churn_horizon_days=_float(
            "METRICS_CHURN_HORIZON_DAYS", raw("METRICS_CHURN_HORIZON_DAYS"), 14.0
        ),
        dagster_webserver_url=(raw("DAGSTER_WEBSERVER_URL") or "http://localhost:3000").rstrip("/"),
        analytics_start_date=start_date,
        dagster_home=raw("DAGSTER_HOME"),
        dagster_pg_host=raw("DAGSTER_PG_HOST"),
        dagster_pg_port=_int("DAGSTER_PG_PORT", raw("DAGSTER_PG_PORT"), 5432),
        dagster_pg_username=raw("DAGSTER_PG_USERNAME"),
        dagster_pg_password=raw("DAGSTER_PG_PASSWORD"),
        dagster_pg_db=raw("DAGSTER_PG_DB"),
    )


def secret_values(settings: Optional[Settings] = None) -> list[str]:
    """The values of every secret that is set, for redaction."""
    s = settings or get_settings()
    values = [
        s.mixpanel_service_account_secret,
        s.mixpanel_api_secret,
        s.mixpanel_project_token,
        s.slack_bot_token,
        s.slack_webhook_url,
        s.firebase_service_account_json,
        s.dagster_pg_password,
    ]
    if s.app_database_url:
        from sqlalchemy.engine import make_url

        try:
            password = make_url(s.app_database_url).password
        except Exception:  # noqa: BLE001 - an unparsable URL is itself secret
            password = None
        values.append(password or s.app_database_url)
    return [v for v in values if v and len(v) >= 4]


def redact(text: str, settings: Optional[Settings] = None) -> str:
    """Replace every secret value in ``text`` with ``***``."""
    for value in sorted(secret_values(settings), key=len, reverse=True):
        text = text.replace(value, "***")
    return text
