"""The ONE place that picks resource implementations, explicitly from the settings.

Every external service has a real client and a local stand-in with one interface
(``resources/<service>.py`` and ``resources/local/``):

=============  ==========================  ==============================================
key            real (configured / prod)     local stand-in (``ANALYTICS_ENV=local`` only)
=============  ==========================  ==============================================
warehouse      BigQueryWarehouse (prod)     DuckDBWarehouse
app_db         AppDatabase(url)             AppDatabase (embedded PostgreSQL)
mixpanel       MixpanelResource (HTTP)      LocalMixpanel (export files, /engage outbox)
slack          SlackResource (bot/webhook)  LocalSlack (log + JSON-lines outbox)
firestore      FirestoreResource            LocalFirestore (JSON-lines export)
=============  ==========================  ==============================================

An HTTP ``mixpanel`` carries the Mixpanel export budget (``PostgresExportBudget``: a ledger
in ``app_db``, so the embedded PostgreSQL locally) shared by every run and pod.

``local`` (default): each service is used for real as soon as its settings are present,
else its stand-in.  ``prod``: BigQuery and every real client; a missing variable fails at
resource set-up with a message naming it.  Secrets are passed as ``dg.EnvVar`` so Dagster
never shows their values.
"""

from __future__ import annotations

from typing import Any, Optional

import dagster as dg

from analytics_platform.settings import MIXPANEL_EXPORT_HOSTS, Settings, get_settings


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


def build_export_budget(s: Settings, app_db: Any) -> Any:
    """The Mixpanel export budget every HTTP export query takes a slot of: a ledger in the
    application PostgreSQL (``app_db``'s URL: ``APP_DATABASE_URL``, else the embedded one
    locally; prod without it fails at the Mixpanel resource's set-up, naming it)."""
    from analytics_platform.resources.app_db import AppDatabase
    from analytics_platform.resources.export_budget import PostgresExportBudget

    return PostgresExportBudget(
        # the same database; its URL requirement is reported with Mixpanel's own settings
        app_db=AppDatabase(url=app_db.url, embedded_dir=app_db.embedded_dir),
        require_database_url=s.is_prod,
        queries_per_hour=s.mixpanel_export_queries_per_hour,
        queries_per_second=s.mixpanel_export_queries_per_second,
        refresh_reserve=s.mixpanel_export_refresh_reserve,
        max_wait_seconds=s.mixpanel_export_budget_max_wait_seconds,
    )


def build_mixpanel(s: Settings, secret, app_db: Any = None) -> Any:
    """Export and /engage are chosen separately:

    * export over HTTP in prod, with any export credential set (a half-set service account
      then fails at set-up, naming the missing variable), or when ``MIXPANEL_EXPORT_URL``
      points somewhere that is not one of Mixpanel's hosts (a local export endpoint or a
      stub: pointing the URL there is itself the setting, so no auth is needed); else the
      local export files;
    * /engage over HTTP in prod or with ``MIXPANEL_PROJECT_TOKEN``; else the outbox.

    HTTP exports take their slots of the shared export budget (``build_export_budget``).
    """
    from analytics_platform.resources.local.mixpanel_files import LocalMixpanel
    from analytics_platform.resources.mixpanel import MixpanelResource, SplitMixpanel

    http_export = (
        s.is_prod
        or bool(s.mixpanel_service_account_username or s.mixpanel_service_account_secret)
        or bool(s.mixpanel_api_secret)
        or s.mixpanel_export_url not in MIXPANEL_EXPORT_HOSTS.values()
    )
    http_engage = s.is_prod or bool(s.mixpanel_project_token)
    local = LocalMixpanel(local_dir=str(s.data_dir))
    if not (http_export or http_engage):
        return local
    http = MixpanelResource(
        export_url=s.mixpanel_export_url,
        api_url=s.mixpanel_api_url,
        project_id=s.mixpanel_project_id,
        service_account_username=s.mixpanel_service_account_username,
        service_account_secret=secret("MIXPANEL_SERVICE_ACCOUNT_SECRET", s.mixpanel_service_account_secret),
        api_secret=secret("MIXPANEL_API_SECRET", s.mixpanel_api_secret),
        project_token=secret("MIXPANEL_PROJECT_TOKEN", s.mixpanel_project_token),
        require_credentials=s.is_prod,
        budget=build_export_budget(s, app_db) if http_export and app_db is not None else None,
    )
    if http_export and http_engage:
        return http
    return SplitMixpanel(
        exports=http if http_export else local,
        profiles=http if http_engage else local,
    )


def build_slack(s: Settings, secret) -> Any:
    """The real client in prod or with ``SLACK_BOT_TOKEN`` / ``SLACK_WEBHOOK_URL``; else the outbox."""
    from analytics_platform.resources.local.slack_outbox import LocalSlack
    from analytics_platform.resources.slack import SlackResource

    if s.is_prod or s.slack_bot_token or s.slack_webhook_url:
        return SlackResource(
            bot_token=secret("SLACK_BOT_TOKEN", s.slack_bot_token),
            webhook_url=secret("SLACK_WEBHOOK_URL", s.slack_webhook_url),
            api_url=s.slack_api_url,
            default_channel=s.slack_default_channel,
        )
    return LocalSlack(
        default_channel=s.slack_default_channel,
        outbox_path=str(s.outbox_dir / "slack_alerts.jsonl"),
    )


def build_firestore(s: Settings, secret) -> Any:
    """firebase-admin in prod or with any FIREBASE_* access setting (or the emulator host);
    else the local JSON-lines export."""
    from analytics_platform.resources.firestore import FirestoreResource
    from analytics_platform.resources.local.firestore_export import LocalFirestore

    collections = dict(
        root_collection=s.firebase_root_collection,
        events_subcollection=s.firebase_events_subcollection,
    )
    if (
        s.is_prod
        or s.firestore_emulator_host
        or s.firebase_credentials_file
        or s.firebase_service_account_json
        or s.firebase_project_id
    ):
        return FirestoreResource(
            project_id=s.firebase_project_id,
            emulator_host=s.firestore_emulator_host,
            credentials_file=s.firebase_credentials_file,
            service_account_json=secret("FIREBASE_SERVICE_ACCOUNT_JSON", s.firebase_service_account_json),
            **collections,
        )
    return LocalFirestore(local_export_path=str(s.data_dir / "firestore" / "events.jsonl"), **collections)


def build_resources(
    settings: Optional[Settings] = None, secrets_as_env_vars: bool = True
) -> dict[str, Any]:
    """Resource instances keyed as the assets expect them (see docs/architecture.md)."""
    from analytics_platform.resources.app_db import AppDatabase

    s = settings or get_settings()

    def secret(name: str, value: Optional[str]) -> Any:
        return _secret_value(name, value, secrets_as_env_vars)

    app_db = AppDatabase(
        url=secret("APP_DATABASE_URL", s.app_database_url),
        embedded_dir=str(s.data_dir / "postgres"),
        require_url=s.is_prod,
    )
    return {
        "warehouse": build_warehouse(s),
        "app_db": app_db,
        "mixpanel": build_mixpanel(s, secret, app_db),
        "slack": build_slack(s, secret),
        "firestore": build_firestore(s, secret),
    }
