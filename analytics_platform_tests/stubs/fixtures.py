"""Pytest fixtures for the stub servers; register with
``pytest_plugins = ["analytics_platform_tests.stubs.fixtures"]`` in the root conftest.

Each test gets a fresh server (starting one takes about a millisecond), so scripted
faults and recorded requests never leak between tests.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from analytics_platform_tests.stubs.mixpanel import MixpanelStub
from analytics_platform_tests.stubs.slack import SlackStub


@pytest.fixture
def mixpanel_stub() -> Iterator[MixpanelStub]:
    """A running Mixpanel stub (export + engage); see ``MixpanelStub`` for its knobs."""
    with MixpanelStub() as stub:
        yield stub


@pytest.fixture
def slack_stub() -> Iterator[SlackStub]:
    """A running Slack stub (Web API + webhook); see ``SlackStub`` for its knobs."""
    with SlackStub() as stub:
        yield stub
