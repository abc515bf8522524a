"""Issue 17.3: the whole demo's terminal output - every WARNING or ERROR line is one of the
faults the demo plants on purpose (labelled), every step prints its checks' results, and it
ends with the next steps."""

from __future__ import annotations

import re
import sys


def test_demo_output_is_labelled_and_ends_with_the_next_steps(app_db_url, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("APP_DATABASE_URL", app_db_url)  # the test server instead of the embedded one
    for var in ("ANALYTICS_ENV", "FIRESTORE_EMULATOR_HOST", "FIREBASE_PROJECT_ID", "FIREBASE_CREDENTIALS_FILE",
                "FIREBASE_SERVICE_ACCOUNT_JSON", "DAGSTER_HOME", "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL",
                "MIXPANEL_EXPORT_URL", "MIXPANEL_PROJECT_TOKEN", "MIXPANEL_API_SECRET", "EVENTS_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delitem(sys.modules, "analytics_platform.definitions", raising=False)
    from analytics_platform.demo.runner import run_demo

    assert run_demo() == 0
    captured = capfd.readouterr()
    lines = (captured.out + captured.err).splitlines()
    loud = [ln for ln in lines if re.search(r"WARNING|ERROR|Warning|Traceback", ln)]
    unlabelled = [ln for ln in loud if "(planted)" not in ln and "planted fault:" not in ln]
    assert unlabelled == []
    assert any(ln.startswith("  planted fault:") for ln in lines)
    assert any(re.match(r"  check \S+ \w+: passed", ln) for ln in lines)
    assert all("UNEXPECTED" not in ln for ln in lines)
    assert "Next steps:" in lines and any("make dev" in ln for ln in lines) and any("make stop" in ln for ln in lines)
