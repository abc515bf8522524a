"""The ONE place that picks resource implementations for ``ANALYTICS_ENV``.

``local`` (default): DuckDB warehouse; every other service is used for real as soon as
its settings are present, else its local stand-in (embedded PostgreSQL, export files,
outboxes, local Firestore export).  ``prod``: BigQuery, and every service must be
configured — a missing variable fails at resource set-up with a message naming it.
Secrets are passed as ``dg.EnvVar`` so Dagster never shows their values.
"""

from __future__ import annotations

from typing import Any, Optional

import dagster as dg

from analytics_platform.settings import Settings, get_settings


def _secret_value(name: str, value: Optional[str], as_env_var: bool = True) -> Any:
    """EnvVar for a secret that is set (Dagster resolves it at run time), else None.

    ``as_env_var=False`` passes the value itself, for code that uses a resource outside
    a Dagster run (the demo seeders, benchmarks).
    """
    if not value:
        return None
    return dg.EnvVar(name) if as_env_var else value


def build_warehouse(settings: Settings):
    from analytics_platform.resources.warehouse import BigQueryWarehouse, DuckDBWarehouse

    if settings.is_prod:
        return BigQueryWarehouse(
            project=settings.gcp_project_id or dg.EnvVar("GCP_PROJECT_ID"),
            location=settings.bigquery_location,
            emulator_host=settings.bigquery_emulator_host,
        )
    return DuckDBWarehouse(path=str(settings.duckdb_path))


def build_resources(
    settings: Optional[Settings] = None, secrets_as_env_vars: bool = True
) -> dict[str, Any]:
    """Resource instances keyed as the assets expect them (see docs/architecture.md)."""
    s = settings or get_settings()

    def _secret(name: str, value: Optional[str]) -> Any:
        return _secret_value(name, value, secrets_as_env_vars)
    from analytics_platform.resources.app_db import AppDatabase
    from analytics_platform.resources.firestore import FirestoreResource
    from analytics_platform.resources.mixpanel import MixpanelResource
    from analytics_platform.resources.slack import SlackResource

    return {
        "warehouse": build_warehouse(s),
        "app_db": AppDatabase(
            url=_secret("APP_DATABASE_URL", s.app_database_url),
            embedded_dir=str(s.data_dir / "postgres"),
            require_url=s.is_prod,
        ),
        "mixpanel": MixpanelResource(
            export_url=s.mixpanel_export_url,
            api_url=s.mixpanel_api_url,
            project_id=s.mixpanel_project_id,
            service_account_username=s.mixpanel_service_account_username,
            service_account_secret=_secret(
                "MIXPANEL_SERVICE_ACCOUNT_SECRET", s.mixpanel_service_account_secret
            ),
            api_secret=_secret("MIXPANEL_API_SECRET", s.mixpanel_api_secret),
            project_token=_secret("MIXPANEL_PROJECT_TOKEN", s.mixpanel_project_token),
            local_dir=str(s.data_dir),
            require_credentials=s.is_prod,
        ),
        "slack": SlackResource(
            bot_token=_secret("SLACK_BOT_TOKEN", s.slack_bot_token),
            webhook_url=_secret("SLACK_WEBHOOK_URL", s.slack_webhook_url),
            api_url=s.slack_api_url,
            default_channel=s.slack_default_channel,
            outbox_path=str(s.outbox_dir / "slack_alerts.jsonl"),
            require_configured=s.is_prod,
        ),
        "firestore": FirestoreResource(
            project_id=s.firebase_project_id,
            emulator_host=s.firestore_emulator_host,
            credentials_file=s.firebase_credentials_file,
            service_account_json=_secret(
                "FIREBASE_SERVICE_ACCOUNT_JSON", s.firebase_service_account_json
            ),
            root_collection=s.firebase_root_collection,
            events_subcollection=s.firebase_events_subcollection,
            local_export_path=str(s.data_dir / "firestore" / "events.jsonl"),
            require_configured=s.is_prod,
        ),
    }
