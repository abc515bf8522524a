"""The documented CLI form (docs/kpis.md): `dagster asset materialize ... --config-json`
with the old flags' run config, against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import days_before

REPO = Path(__file__).resolve().parents[2]


def test_cli_materialize_with_threshold_and_dry_run(kpi_db, app_db_url, tmp_path):
    kpi_db.exams("u1", [80.0], at=days_before(10))
    kpi_db.exams("u2", [60.0], at=days_before(20))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text("")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "APP_DATABASE_URL": app_db_url,
        "ANALYTICS_DATA_DIR": str(tmp_path / "data"),
        "INACTIVITY_THRESHOLD_DAYS": "3",  # overridden by threshold_days below
    }
    # --threshold 14 --dry-run, as_of pinned
    config = {"ops": {"app_db__weekly_kpi": {"config": {
        "threshold_days": 14, "dry_run": True, "as_of": "2024-06-06T00:00:00Z"}}}}
    dagster = Path(sys.executable).with_name("dagster")
    out = subprocess.run(
        [str(dagster), "asset", "materialize", "-m", "analytics_platform.definitions",
         "--select", "app_db/weekly_kpi", "--config-json", json.dumps(config)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    logs = out.stdout + out.stderr
    assert out.returncode == 0, logs[-3000:]
    assert "Found 1 inactive users (threshold=14 days); dry_run=True" in logs
    assert "Summary: processed=1, failed=0, threshold=14 days, duration_ms=" in logs
    assert kpi_db.table("weekly_kpi") == []  # dry run
