"""Acceptance 7: secrets never leak.

Every secret variable is set to a unique marker — ``MIXPANEL_SERVICE_ACCOUNT_SECRET``,
``MIXPANEL_API_SECRET``, ``MIXPANEL_PROJECT_TOKEN``, ``SLACK_BOT_TOKEN``, ``SLACK_WEBHOOK_URL``,
``FIREBASE_SERVICE_ACCOUNT_JSON`` and the password in ``APP_DATABASE_URL`` — and the services
that need them are real or protocol-faithful (the Mixpanel and Slack stubs, which only accept
these credentials; the session PostgreSQL; the Firestore emulator).  Then:

1. the full demo (``python -m analytics_platform.demo``: every domain's seed and steps,
   recorded in ``$DAGSTER_HOME``),
2. failing runs through the CLI (``dagster asset materialize``): the Mixpanel export while
   Mixpanel answers 403 with a body that echoes the credentials back; the Firestore
   extraction with the service-account JSON and no emulator (the key is not a key; step
   retries disabled for the run, to keep the test short); ``weekly_kpi`` with the database down;
3. the run-failure sensor, which posts one Slack message per failed run.

No marker (nor the Basic-auth encoding of a Mixpanel credential) may appear in: the
processes' stdout/stderr, any file under ``$DAGSTER_HOME`` (event log, run storage, compute
logs: metadata and exceptions included), any file under ``$ANALYTICS_DATA_DIR`` (outboxes),
any table of the warehouse or the application database, the Slack messages, or the Mixpanel
profiles.  And the secrets were really used (the stubs saw them), so nothing passed by luck.
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import sqlalchemy as sa
from dagster._core.instance.ref import InstanceRef
from sqlalchemy.pool import NullPool

from analytics_platform.ops.sensors import run_failure_slack_alert
from analytics_platform.resources.slack import SlackResource
from analytics_platform_tests.infra.processes import free_port
from analytics_platform_tests.reliability.helpers import REPO, clean_env, finish, start_process, tail
from analytics_platform_tests.stubs.mixpanel import MixpanelStub
from analytics_platform_tests.stubs.slack import SlackStub

DAY = "2024-06-05"


def _marker(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


def test_no_secret_in_logs_metadata_alerts_outboxes_or_exceptions(tmp_path, app_db_url, firestore_emulator, firestore_project, monkeypatch):
    sa_user = "analytics-sa.stub"
    m = {
        "MIXPANEL_SERVICE_ACCOUNT_SECRET": _marker("mpsasecret"),
        "MIXPANEL_API_SECRET": _marker("mpapisecret"),
        "MIXPANEL_PROJECT_TOKEN": _marker("mptoken"),
        "SLACK_BOT_TOKEN": _marker("slackbot"),
        "webhook_secret_path": _marker("hooksecret"),
        "firebase_private_key": _marker("fbprivatekey"),
        "APP_DATABASE_URL password": _marker("pgpassword"),
    }
    service_account = json.dumps({
        "type": "service_account", "project_id": firestore_project, "private_key_id": _marker("fbkeyid"),
        "private_key": "-----BEGIN " + "PRIVATE KEY-----\n" + m['firebase_private_key'] + "\n-----END PRIVATE KEY-----\n",  # split: no key-shaped literal in git
        "client_email": f"sa@{firestore_project}.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    })
    database_url = sa.make_url(app_db_url).set(password=m["APP_DATABASE_URL password"]).render_as_string(hide_password=False)
    with MixpanelStub(
        service_account=(sa_user, m["MIXPANEL_SERVICE_ACCOUNT_SECRET"]),
        api_secret=m["MIXPANEL_API_SECRET"],
        project_token=m["MIXPANEL_PROJECT_TOKEN"],
    ) as mixpanel_stub, SlackStub(
        bot_token=m["SLACK_BOT_TOKEN"], webhook_path=f"/services/T0/B0/{m['webhook_secret_path']}"
    ) as slack_stub:
        webhook_url = slack_stub.webhook_url
        secrets_env = {
            "MIXPANEL_SERVICE_ACCOUNT_SECRET": m["MIXPANEL_SERVICE_ACCOUNT_SECRET"],
            "MIXPANEL_API_SECRET": m["MIXPANEL_API_SECRET"],
            "MIXPANEL_PROJECT_TOKEN": m["MIXPANEL_PROJECT_TOKEN"],
            "SLACK_BOT_TOKEN": m["SLACK_BOT_TOKEN"],
            "SLACK_WEBHOOK_URL": webhook_url,
            "FIREBASE_SERVICE_ACCOUNT_JSON": service_account,
            "APP_DATABASE_URL": database_url,
        }
        markers = {**m, "SLACK_WEBHOOK_URL": webhook_url, "FIREBASE_SERVICE_ACCOUNT_JSON": service_account,
                   "APP_DATABASE_URL": database_url}
        for user, secret in ((sa_user, m["MIXPANEL_SERVICE_ACCOUNT_SECRET"]), (m["MIXPANEL_API_SECRET"], "")):
            markers[f"basic auth of {user[:12]}"] = base64.b64encode(f"{user}:{secret}".encode()).decode()

        data_dir = tmp_path / "data"
        export_file = data_dir / "mixpanel_export" / f"{DAY}.jsonl"
        mixpanel_stub.add_file(DAY, export_file)  # the demo seeds this file; the stub serves it
        env = clean_env(
            tmp_path,
            ANALYTICS_DATA_DIR=str(data_dir),
            MIXPANEL_EXPORT_URL=mixpanel_stub.export_url,
            MIXPANEL_API_URL=mixpanel_stub.api_url,
            MIXPANEL_PROJECT_ID=mixpanel_stub.project_id,
            MIXPANEL_SERVICE_ACCOUNT_USERNAME=sa_user,
            SLACK_API_URL=slack_stub.api_url,
            SLACK_DEFAULT_CHANNEL="#data-alerts",
            FIRESTORE_EMULATOR_HOST=firestore_emulator,
            FIREBASE_PROJECT_ID=firestore_project,
            **secrets_env,
        )
        home = Path(env["DAGSTER_HOME"])
        for name, value in {**secrets_env, "SLACK_API_URL": slack_stub.api_url}.items():
            monkeypatch.setenv(name, value)  # the sensor below runs here, as in the code server

        # 1. the full demo ------------------------------------------------------------
        demo_log = tmp_path / "demo.log"
        demo = start_process([sys.executable, "-m", "analytics_platform.demo"], env, demo_log)
        assert finish(demo, demo_log, timeout=600) == 0, tail(demo_log)
        assert "Demo complete." in tail(demo_log)

        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
        slack = SlackResource(bot_token=m["SLACK_BOT_TOKEN"], api_url=slack_stub.api_url, default_channel="#data-alerts")
        first_tick = run_failure_slack_alert.evaluate_tick(
            dg.build_sensor_context(instance=instance, resources={"slack": slack})
        )

        # 2. failing runs (at the same time) ---------------------------------------------
        echo = f'{{"error": "Invalid credentials {sa_user}:{m["MIXPANEL_SERVICE_ACCOUNT_SECRET"]} token {m["MIXPANEL_PROJECT_TOKEN"]}"}}'
        mixpanel_stub.fail_export(403, body=echo.encode())
        dagster = str(Path(sys.executable).with_name("dagster"))
        cli = [dagster, "asset", "materialize", "-m", "analytics_platform.definitions"]
        dead_db = sa.make_url(database_url).set(port=free_port()).render_as_string(hide_password=False)
        failing = {
            # Mixpanel refuses the credentials and echoes them back in its answer
            "mixpanel": (cli + ["--select", "mixpanel_data/mixpanel_events", "--partition", DAY], env),
            # no emulator: the service-account JSON is used, and its key is not a key
            "firebase": (
                cli + ["--select", "engagement/firestore_app_usage_events",
                       "--config-json", json.dumps({"execution": {"config": {"retries": {"disabled": {}}}}})],
                {**env, "FIRESTORE_EMULATOR_HOST": ""},
            ),
            # the application database is down (its URL carries the password)
            "kpi": (cli + ["--select", "app_db/weekly_kpi"], {**env, "APP_DATABASE_URL": dead_db}),
        }
        procs = {name: (start_process(argv, run_env, tmp_path / f"{name}.log", cwd=REPO), tmp_path / f"{name}.log")
                 for name, (argv, run_env) in failing.items()}
        for name, (proc, log) in procs.items():
            assert finish(proc, log) != 0, tail(log)
        failing_logs = [log for _, log in procs.values()]

        # 3. the run-failure alerts ---------------------------------------------------------
        run_failure_slack_alert.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=first_tick.cursor, resources={"slack": slack})
        )
        failed = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        assert len(failed) == 3
        alerts = [msg for msg in slack_stub.messages if msg["text"].startswith("Run failed")]
        assert len(alerts) == 3
        instance.dispose()

        # the secrets were used for real --------------------------------------------------
        exports = mixpanel_stub.export_requests
        assert exports[0]["auth"] == "service_account" and exports[0]["auth_ok"] and exports[0]["lines_sent"] > 0
        assert mixpanel_stub.engage_batches  # the cohort marker went out with the project token
        assert {m_["via"] for m_ in slack_stub.messages} == {"bot"} and len(slack_stub.messages) > 3
        assert [r for r in slack_stub.requests if r["endpoint"] == "api" and r["error"] is None]

        # nothing leaked ---------------------------------------------------------------------
        texts: dict[str, bytes] = {}
        for log in (demo_log, *failing_logs):
            texts[f"output of {log.name}"] = log.read_bytes()
        for root in (home, data_dir):
            for path in root.rglob("*"):
                if path.is_file() and path.suffix not in (".duckdb", ".wal") and "postgres" not in path.parts:
                    texts[str(path)] = path.read_bytes()
        texts.update(_warehouse_tables(data_dir / "warehouse.duckdb"))
        texts.update(_database_tables(app_db_url))
        texts["slack messages"] = json.dumps(slack_stub.messages).encode()
        texts["mixpanel profiles"] = json.dumps(mixpanel_stub.profiles).encode()
        texts["mixpanel export requests"] = json.dumps(mixpanel_stub.export_requests, default=str).encode()

    assert any("history" in k or "runs" in k for k in texts)  # the event log was scanned
    # positive control: the echoed credentials did reach the logs and the event log, redacted
    redacted = f"Invalid credentials {sa_user}:*** token ***".encode()
    assert redacted in texts["output of mixpanel.log"]
    assert any(redacted in data for where, data in texts.items() if "history" in where)
    leaks = [
        f"{name} in {where}"
        for where, data in texts.items()
        for name, value in markers.items()
        if value.encode() in data
    ]
    assert leaks == []


def _warehouse_tables(path: Path) -> dict[str, bytes]:
    """Every table of the DuckDB warehouse as CSV text (its file is compressed: read the rows)."""
    out = {}
    con = duckdb.connect(str(path), read_only=True)
    try:
        for schema, table in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall():
            frame = con.execute(f'SELECT * FROM "{schema}"."{table}"').df()
            out[f"warehouse {schema}.{table}"] = frame.to_csv(index=False).encode()
    finally:
        con.close()
    return out


def _database_tables(url: str) -> dict[str, bytes]:
    out = {}
    engine = sa.create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        tables = conn.execute(sa.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )).scalars().all()
        for table in tables:
            frame = pd.read_sql(sa.text(f'SELECT * FROM "{table}"'), conn)
            out[f"app database {table}"] = frame.to_csv(index=False).encode()
    engine.dispose()
    return out
