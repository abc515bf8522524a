"""Fixtures of the reliability tests (issue 9): a clean environment per test, the stub
servers, and DuckDB/PostgreSQL helpers shared by the fault, concurrency and kill tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from analytics_platform.settings import _ENV_TO_FIELD
from analytics_platform_tests.mixpanel.conftest import TEST_CONFIG


@pytest.fixture(autouse=True)
def _reliability_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Nothing from the shell leaks in: every contract variable is unset, then the local
    default with an inline events configuration and a per-test data directory."""
    for name in (*_ENV_TO_FIELD, "DAGSTER_HOME", "PGTZ"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EVENTS_CONFIG", json.dumps(TEST_CONFIG))
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(tmp_path / "data"))
    yield
