"""The production instance (./dagster.prod.yaml, the image's dagster.yaml) exercised on a
real PostgreSQL and a GCS emulator.

DAGSTER_HOME holds an unmodified copy of ./dagster.prod.yaml; DAGSTER_PG_* point at a fresh
database on the session's PostgreSQL; DAGSTER_COMPUTE_LOGS_BUCKET names a bucket of a local
GCS API emulator (gcp-storage-emulator; google-cloud-storage talks to it through
STORAGE_EMULATOR_HOST).  A partition is materialized with the CLI, and the run, its event
log and the asset index must be in PostgreSQL (not in SQLite files under DAGSTER_HOME), the
step's compute logs in the bucket; the run queue, its Mixpanel tag limits and run retries
are what the file says.
"""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from analytics_platform_tests.ops import harness

REPO_YAML = harness.REPO_ROOT / "dagster.prod.yaml"
BUCKET = "analytics-compute-logs"


@pytest.fixture
def gcs_emulator():
    """A GCS JSON API emulator (in memory) on a free port, with the compute-log bucket."""
    import socket

    from gcp_storage_emulator.server import create_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _pg_env(app_db_url: str) -> dict[str, str]:
    url = sa.make_url(app_db_url)
    if not url.host or not url.port:
        pytest.skip("the session PostgreSQL listens on a unix socket only; dagster.yaml takes host and port")
    return {
        "DAGSTER_PG_USERNAME": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_HOST": url.host,
        "DAGSTER_PG_DB": url.database,
        "DAGSTER_PG_PORT": str(url.port),
    }


def _walk(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, path + (str(k),))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (str(i),))
    else:
        yield path, node


def test_dagster_yaml_has_no_literal_secret() -> None:
    config = yaml.safe_load(REPO_YAML.read_text())
    secretish = ("password", "secret", "token", "credential")
    literal = [
        "/".join(path) for path, value in _walk(config)
        if any(w in "/".join(path).lower() for w in secretish) and path[-1] != "env" and value not in (None, "")
    ]
    assert not literal, f"dagster.yaml holds literal secrets at {literal}: use {{env: VAR}}"


@pytest.mark.timeout(600)
def test_materialization_stored_in_postgres_with_compute_logs_in_gcs(
    local_platform, app_db_url: str, gcs_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = _pg_env(app_db_url)
    gcs = {"DAGSTER_COMPUTE_LOGS_BUCKET": BUCKET, "STORAGE_EMULATOR_HOST": gcs_emulator, "GOOGLE_CLOUD_PROJECT": "test"}
    home = local_platform.dagster_home
    shutil.copyfile(REPO_YAML, home / "dagster.yaml")  # exactly the repository's file
    env = {**local_platform.env, **pg, **gcs}
    key, partition = local_platform.asset_key, harness.DEMO_DATE

    argv = [
        str(harness.VENV_BIN / "dagster"), "asset", "materialize", "-m", "analytics_platform.definitions",
        "--select", key, "--partition", partition,
    ]
    harness.run_logged(argv, env, local_platform.log, 600)

    for name, value in {**pg, **gcs}.items():  # the instance resolves its env: vars when loaded
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)

        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS, runs
        run = runs[0]
        assert run.tags.get("dagster/partition") == partition

        # The production run queue, with the limits that protect Mixpanel, and run retries.
        expected = yaml.safe_load(REPO_YAML.read_text())
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config  # what the daemon dequeues by
        assert queue.tag_concurrency_limits == expected["concurrency"]["runs"]["tag_concurrency_limits"]
        assert queue.max_concurrent_runs == expected["concurrency"]["runs"]["max_concurrent_runs"]
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == expected["concurrency"]["pools"]["default_limit"]
        assert instance.run_retries_enabled and instance.run_retries_max_retries == expected["run_retries"]["max_retries"]
        assert instance.run_monitoring_enabled
        assert type(instance.compute_log_manager).__name__ == "GCSComputeLogManager"
    finally:
        instance.dispose()

    # Read PostgreSQL directly: the run, its materialization events and the asset index.
    engine = sa.create_engine(app_db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            status = conn.execute(sa.text("SELECT status FROM runs WHERE run_id = :r"), {"r": run.run_id}).scalar()
            materializations = conn.execute(
                sa.text(
                    "SELECT COUNT(*) FROM event_logs WHERE run_id = :r "
                    "AND dagster_event_type = 'ASSET_MATERIALIZATION' AND partition = :p"
                ),
                {"r": run.run_id, "p": partition},
            ).scalar()
            events = conn.execute(sa.text("SELECT COUNT(*) FROM event_logs WHERE run_id = :r"), {"r": run.run_id}).scalar()
            asset_keys = {row[0] for row in conn.execute(sa.text("SELECT asset_key FROM asset_keys"))}
    finally:
        engine.dispose()
    assert status == "SUCCESS"
    assert materializations == 1
    assert events > 5
    assert json.dumps(key.split("/")) in asset_keys or any(key.split("/")[-1] in k for k in asset_keys)
    # The step's stdout/stderr are in the bucket, under the configured prefix.
    from google.cloud import storage

    prefix = yaml.safe_load(REPO_YAML.read_text())["compute_logs"]["config"]["prefix"]
    blobs = [b.name for b in storage.Client().list_blobs(BUCKET)]
    assert any(name.startswith(f"{prefix}/") and run.run_id in name for name in blobs), blobs
    # Nothing went to SQLite under DAGSTER_HOME.
    assert not list(home.rglob("*.db")), sorted(str(p) for p in home.rglob("*.db"))
