"""The session fixtures themselves: real servers, isolated per test, the known-good clients."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from analytics_platform import migrations

from analytics_platform_tests.infra import bigquery as bq_infra
from analytics_platform_tests.infra.firestore import clear_firestore, firestore_client
from analytics_platform_tests.infra.postgres import SERVER_TIMEZONE


def test_postgres_url_is_a_real_server_with_a_non_utc_default(postgres_url):
    assert postgres_url.startswith("postgresql+psycopg2://")
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version()")).scalar().startswith("PostgreSQL")
        assert conn.execute(sa.text("SHOW TimeZone")).scalar() == SERVER_TIMEZONE
    engine.dispose()


def test_app_db_url_is_a_fresh_database(postgres_url, app_db_url):
    assert sa.make_url(app_db_url).database.startswith("test_")
    assert sa.make_url(app_db_url).database != sa.make_url(postgres_url).database
    engine = sa.create_engine(app_db_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        tables = {r[0] for r in conn.execute(
            sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        )}
        rows = {t: conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar() for t in tables
                if t != migrations.VERSION_TABLE}
    engine.dispose()
    # a fresh database, migrated to the newest revision: the platform's tables only, empty
    assert tables == set(migrations.OWNED_TABLES) | {migrations.VERSION_TABLE}
    assert rows == dict.fromkeys(migrations.OWNED_TABLES, 0)


def test_firestore_needs_an_anonymous_credential(firestore_emulator, firestore_project, monkeypatch):
    import firebase_admin
    from firebase_admin import firestore
    from google.auth.exceptions import DefaultCredentialsError

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # do not probe for a GCE metadata server
    name = f"plain-{uuid.uuid4().hex[:8]}"
    app = firebase_admin.initialize_app(options={"projectId": firestore_project}, name=name)
    try:
        with pytest.raises(DefaultCredentialsError):
            firestore.client(app).collection("x").document("y").get()
    finally:
        firebase_admin.delete_app(app)


def test_firestore_client_reads_and_writes_the_emulator(firestore_emulator, firestore_project, monkeypatch, request):
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator)
    client = firestore_client(firestore_project, firestore_emulator)
    events = client.collection("app_usage_events").document("user-1").collection("events")
    events.document("e1").set({"event": "login", "n": 2**60})
    assert events.document("e1").get().to_dict() == {"event": "login", "n": 2**60}
    assert [d.id for d in client.collection_group("events").stream()] == ["e1"]
    assert client is firestore_client(firestore_project, firestore_emulator)  # reused
    assert request.node.get_closest_marker("firestore") is not None  # marked automatically


def test_firestore_projects_are_isolated_and_clearable(firestore_emulator, firestore_project):
    # no FIRESTORE_EMULATOR_HOST in the environment: the helper sets it only while it builds
    other = f"{firestore_project}-other"
    mine = firestore_client(firestore_project, firestore_emulator)
    theirs = firestore_client(other, firestore_emulator)
    mine.collection("c").document("a").set({"v": 1})
    theirs.collection("c").document("b").set({"v": 2})
    assert [d.id for d in mine.collection("c").stream()] == ["a"]
    assert [d.id for d in theirs.collection("c").stream()] == ["b"]
    clear_firestore(firestore_emulator, firestore_project)
    assert list(mine.collection("c").stream()) == []
    assert [d.id for d in theirs.collection("c").stream()] == ["b"]
    clear_firestore(firestore_emulator, other)


def test_bigquery_emulator_speaks_the_bigquery_api(bigquery_emulator, request):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(
        project="fixture-check",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": bigquery_emulator},
    )
    try:
        client.create_dataset("ds", exists_ok=True)
        client.query("CREATE TABLE ds.t (id INT64, at TIMESTAMP)").result()
        client.query("INSERT INTO ds.t VALUES (1, TIMESTAMP '2024-01-01 00:00:00+00')").result()
        assert [tuple(r.values()) for r in client.query("SELECT id FROM ds.t").result()] == [(1,)]
    finally:
        client.close()
    assert request.node.get_closest_marker("bigquery") is not None


def test_missing_bigquery_side_environment_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("BQ_EMULATOR_VENV", str(tmp_path / "nope"))
    problem = bq_infra.emulator_available()
    assert problem and "nope" in problem
