"""The ops test helpers themselves: doc command extraction and the missing-browser failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics_platform_tests.ops import harness


def test_doc_command_joins_continuations_and_drops_comments(tmp_path: Path) -> None:
    doc = tmp_path / "ops.md"
    doc.write_text(
        "text\n<!-- command: demo -->\n```bash\n# a comment\ndagster asset materialize \\\n"
        "    --select a/b --partition-range 2024-06-01...2024-06-02\n```\n"
        "<!-- command: other -->\n```bash\ndagster job backfill -j x --noprompt\n```\n"
    )
    assert harness.doc_command("demo", doc) == (
        "dagster asset materialize --select a/b --partition-range 2024-06-01...2024-06-02"
    )
    assert harness.doc_command("other", doc) == "dagster job backfill -j x --noprompt"
    with pytest.raises(AssertionError, match="no block marked"):
        harness.doc_command("missing", doc)


def test_documented_commands_resolve_to_this_virtualenv() -> None:
    argv = harness.argv_of("dagster asset list -m analytics_platform.definitions")
    assert Path(argv[0]).parent == harness.VENV_BIN and Path(argv[0]).exists()
    assert harness.option(argv, "-m") == "analytics_platform.definitions"


def test_missing_chromium_fails_with_the_setup_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(harness, "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(AssertionError, match=r"\.ci/setup_e2e\.sh"):
        harness.chromium_or_fail()


def test_local_env_configures_no_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-no-leak")
    monkeypatch.setenv("DAGSTER_PG_HOST", "db.example")
    monkeypatch.setenv("ANALYTICS_ENV", "prod")
    env = harness.local_env(tmp_path / "home", tmp_path / "data")
    assert "SLACK_BOT_TOKEN" not in env and "DAGSTER_PG_HOST" not in env
    assert env["ANALYTICS_ENV"] == "local"
    assert env["DAGSTER_HOME"] == str(tmp_path / "home")
    assert env["ANALYTICS_DATA_DIR"] == str(tmp_path / "data")
