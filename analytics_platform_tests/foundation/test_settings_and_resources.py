"""settings.py (the only reader of the environment) and build_resources (the one place
that picks implementations): defaults, validation, and prod failing fast by name."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from analytics_platform.resources import build_resources
from analytics_platform.resources.firestore import FirestoreResource
from analytics_platform.resources.local.firestore_export import LocalFirestore
from analytics_platform.resources.local.mixpanel_files import LocalMixpanel
from analytics_platform.resources.local.slack_outbox import LocalSlack
from analytics_platform.resources.mixpanel import MixpanelResource, MixpanelService, SplitMixpanel
from analytics_platform.resources.slack import SlackResource
from analytics_platform.resources.warehouse import BigQueryWarehouse, DuckDBWarehouse
from analytics_platform.settings import SettingsError, get_settings, redact


def test_defaults_follow_the_environment_contract():
    s = get_settings({})
    assert s.analytics_env == "local"
    assert s.data_dir == Path(".analytics_data")
    assert s.duckdb_path == Path(".analytics_data/warehouse.duckdb")
    assert (s.bigquery_dataset, s.bigquery_table, s.cohort_dataset) == ("mixpanel_data", "mixpanel_events", "peerplay")
    assert (s.posthog_dataset_id, s.firebase_dataset_id, s.posthog_aggregated_dataset_id) == (
        "posthog_etl", "firebase_etl_prod", "posthog_aggregated")
    assert s.mixpanel_export_url == "https://data.mixpanel.com"
    assert s.mixpanel_api_url == "https://api.mixpanel.com"
    assert s.slack_default_channel == "#data-alerts"
    assert (s.firebase_root_collection, s.firebase_events_subcollection) == ("app_usage_events", "events")
    assert s.cohort_marker == "state_loss_temp_user_cohort_v1"
    assert (s.inactivity_threshold_days, s.kpi_lookback_days, s.metrics_default_target,
            s.metrics_use_bayesian, s.metrics_churn_horizon_days) == (7, 30, 0.0, False, 14.0)
    assert s.analytics_start_date == "2024-01-01"
    assert s.mixpanel_late_days == 2
    assert s.bigquery_location == "US"


def test_data_dir_moves_the_duckdb_file_unless_it_is_set():
    assert get_settings({"ANALYTICS_DATA_DIR": "/x"}).duckdb_path == Path("/x/warehouse.duckdb")
    assert get_settings({"ANALYTICS_DATA_DIR": "/x", "DUCKDB_PATH": "/y.db"}).duckdb_path == Path("/y.db")


@pytest.mark.parametrize("region,data,api", [
    ("eu", "https://data-eu.mixpanel.com", "https://api-eu.mixpanel.com"),
    ("in", "https://data-in.mixpanel.com", "https://api-in.mixpanel.com"),
])
def test_region_picks_hosts_and_overrides_win(region, data, api):
    s = get_settings({"MIXPANEL_REGION": region})
    assert (s.mixpanel_export_url, s.mixpanel_api_url) == (data, api)
    s = get_settings({"MIXPANEL_REGION": region, "MIXPANEL_EXPORT_URL": "http://127.0.0.1:8123/"})
    assert s.mixpanel_export_url == "http://127.0.0.1:8123"


@pytest.mark.parametrize("env,name", [
    ({"ANALYTICS_ENV": "staging"}, "ANALYTICS_ENV"),
    ({"MIXPANEL_REGION": "mars"}, "MIXPANEL_REGION"),
    ({"INACTIVITY_THRESHOLD_DAYS": "seven"}, "INACTIVITY_THRESHOLD_DAYS"),
    ({"METRICS_USE_BAYESIAN": "maybe"}, "METRICS_USE_BAYESIAN"),
    ({"METRICS_DEFAULT_TARGET": "high"}, "METRICS_DEFAULT_TARGET"),
    ({"ANALYTICS_START_DATE": "01/01/2024"}, "ANALYTICS_START_DATE"),
])
def test_invalid_values_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        get_settings(env)


def test_local_picks_duckdb_and_prod_picks_bigquery():
    local = build_resources(get_settings({"DUCKDB_PATH": "/tmp/x.duckdb"}))
    assert isinstance(local["warehouse"], DuckDBWarehouse)
    assert local["warehouse"].path == "/tmp/x.duckdb"
    prod = build_resources(get_settings({"ANALYTICS_ENV": "prod", "GCP_PROJECT_ID": "p1",
                                         "BIGQUERY_EMULATOR_HOST": "http://127.0.0.1:9050"}))
    assert isinstance(prod["warehouse"], BigQueryWarehouse)
    assert prod["warehouse"].project == "p1"
    assert prod["warehouse"].emulator_host == "http://127.0.0.1:9050"


def test_secrets_are_env_var_references_not_values():
    env = {"SLACK_BOT_TOKEN": "xoxb-s3cr3t-1", "MIXPANEL_PROJECT_TOKEN": "tok-s3cr3t-2",
           "MIXPANEL_API_SECRET": "sec-s3cr3t-3"}
    resources = build_resources(get_settings(env))
    assert isinstance(resources["slack"].bot_token, dg.EnvVar)
    assert isinstance(resources["mixpanel"].project_token, dg.EnvVar)
    assert isinstance(resources["mixpanel"].api_secret, dg.EnvVar)
    assert "s3cr3t" not in repr(get_settings(env))
    assert redact("token xoxb-s3cr3t-1 and sec-s3cr3t-3", get_settings(env)) == "token *** and ***"


STUB = "http://127.0.0.1:8123"
SA = {"MIXPANEL_SERVICE_ACCOUNT_USERNAME": "sa", "MIXPANEL_SERVICE_ACCOUNT_SECRET": "sa-secret", "MIXPANEL_PROJECT_ID": "1"}


@pytest.mark.parametrize("env,cls,export_mode,engage_mode", [
    ({}, LocalMixpanel, "local_files", "outbox"),
    ({**SA, "MIXPANEL_PROJECT_TOKEN": "tok-1"}, MixpanelResource, "service_account", "http"),
    ({"MIXPANEL_API_SECRET": "sec-1", "MIXPANEL_PROJECT_TOKEN": "tok-1"}, MixpanelResource, "legacy_secret", "http"),
    ({"MIXPANEL_EXPORT_URL": STUB, "MIXPANEL_PROJECT_TOKEN": "tok-1"}, MixpanelResource, "anonymous_http", "http"),
    ({"MIXPANEL_EXPORT_URL": STUB}, SplitMixpanel, "anonymous_http", "outbox"),
    ({"MIXPANEL_EXPORT_URL": "https://data-eu.mixpanel.com/"}, LocalMixpanel, "local_files", "outbox"),
    (SA, SplitMixpanel, "service_account", "outbox"),
    ({"MIXPANEL_PROJECT_TOKEN": "tok-1"}, SplitMixpanel, "local_files", "http"),
    ({"ANALYTICS_ENV": "prod", **SA, "MIXPANEL_PROJECT_TOKEN": "tok-1"}, MixpanelResource, "service_account", "http"),
])
def test_mixpanel_export_and_engage_are_chosen_from_the_settings(env, cls, export_mode, engage_mode):
    mixpanel = build_resources(get_settings(env))["mixpanel"]
    assert type(mixpanel) is cls and isinstance(mixpanel, MixpanelService)
    assert (mixpanel.export_mode, mixpanel.engage_mode) == (export_mode, engage_mode)


def test_a_half_set_service_account_is_not_silently_local():
    env = {"MIXPANEL_SERVICE_ACCOUNT_USERNAME": "sa"}
    resources = build_resources(get_settings(env))
    with pytest.raises(Exception) as info:
        with dg.build_resources({"mixpanel": resources["mixpanel"]}):
            pass
    assert "MIXPANEL_SERVICE_ACCOUNT_SECRET" in _messages(info.value)


@pytest.mark.parametrize("env,cls,mode", [
    ({}, LocalSlack, "outbox"),
    ({"SLACK_BOT_TOKEN": "xoxb-1"}, SlackResource, "bot"),
    ({"SLACK_WEBHOOK_URL": "https://hooks.example/services/x"}, SlackResource, "webhook"),
])
def test_slack_is_chosen_from_the_settings(env, cls, mode):
    slack = build_resources(get_settings({"ANALYTICS_DATA_DIR": "/d", **env}))["slack"]
    assert type(slack) is cls and slack.mode == mode and slack.default_channel == "#data-alerts"
    if cls is LocalSlack:
        assert slack.outbox_path == "/d/outbox/slack_alerts.jsonl"


@pytest.mark.parametrize("env,cls,mode", [
    ({}, LocalFirestore, "local_export"),
    ({"FIREBASE_PROJECT_ID": "p"}, FirestoreResource, "firebase"),
    ({"FIREBASE_CREDENTIALS_FILE": "/k.json"}, FirestoreResource, "firebase"),
    ({"FIRESTORE_EMULATOR_HOST": "127.0.0.1:8080"}, FirestoreResource, "emulator"),
])
def test_firestore_is_chosen_from_the_settings(env, cls, mode):
    fs = build_resources(get_settings({"ANALYTICS_DATA_DIR": "/d", "FIREBASE_ROOT_COLLECTION": "r", **env}))["firestore"]
    assert type(fs) is cls and fs.mode == mode and fs.root_collection == "r"
    if cls is LocalFirestore:
        assert fs.local_export_path == "/d/firestore/events.jsonl"


def test_secrets_as_values_outside_a_run():
    env = {"SLACK_BOT_TOKEN": "xoxb-s3cr3t-1", "MIXPANEL_PROJECT_TOKEN": "tok-s3cr3t-2", "MIXPANEL_API_SECRET": "sec-3"}
    resources = build_resources(get_settings(env), secrets_as_env_vars=False)
    assert resources["slack"].bot_token == "xoxb-s3cr3t-1"
    assert (resources["mixpanel"].project_token, resources["mixpanel"].api_secret) == ("tok-s3cr3t-2", "sec-3")


def _messages(exc: BaseException) -> str:
    """The message of ``exc`` and of every exception it was raised from."""
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("key,variable", [
    ("app_db", "APP_DATABASE_URL"),
    ("mixpanel", "MIXPANEL_"),
    ("slack", "SLACK_"),
    ("firestore", "FIREBASE_"),
])
def test_prod_without_a_setting_fails_at_resource_setup_naming_it(key, variable):
    resources = build_resources(get_settings({"ANALYTICS_ENV": "prod", "GCP_PROJECT_ID": "p1"}))
    with pytest.raises(Exception) as info:
        with dg.build_resources({key: resources[key]}):
            pass
    assert variable in _messages(info.value)


def test_prod_without_a_project_fails_naming_it(monkeypatch):
    monkeypatch.delenv("GCP_PROJECT_ID", raising=False)
    resources = build_resources(get_settings({"ANALYTICS_ENV": "prod"}))
    with pytest.raises(Exception) as info:
        with dg.build_resources({"warehouse": resources["warehouse"]}):
            pass
    assert "GCP_PROJECT_ID" in _messages(info.value)


def test_definitions_load_with_nothing_set():
    from analytics_platform.definitions import defs

    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for contract_key in (
        "mixpanel_data/mixpanel_events", "mixpanel_data/event_anomalies", "peerplay/state_loss_temp_users",
        "mixpanel/state_loss_temp_user_cohort", "posthog_aggregated/sessions", "posthog_aggregated/persons",
        "app_db/user_engagement_signals", "app_db/user_milestones", "app_db/weekly_kpi",
    ):
        assert contract_key in keys
