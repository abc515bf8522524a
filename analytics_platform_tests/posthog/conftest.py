"""Fixtures of the posthog domain (the data set itself is in ``data.py``)."""

from __future__ import annotations

from typing import Iterator

import pytest

from analytics_platform.resources.warehouse import Warehouse
from analytics_platform_tests.posthog.data import load_sources


@pytest.fixture
def loaded(warehouse: Warehouse) -> Iterator[Warehouse]:
    """The ``warehouse`` (DuckDB and BigQuery emulator) with the hand-made sources."""
    load_sources(warehouse)
    yield warehouse


@pytest.fixture
def duck(duckdb_warehouse: Warehouse) -> Iterator[Warehouse]:
    """DuckDB only, with the hand-made sources (for the tests that need many runs)."""
    load_sources(duckdb_warehouse)
    yield duckdb_warehouse
