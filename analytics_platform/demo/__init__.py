"""Deterministic synthetic data for the local default, with one plug-in per domain.

Each domain has a module here, ``analytics_platform.demo.<domain>``, that provides
``seed(ctx: DemoContext) -> None`` (write its data into the local stores) and
``steps(ctx: DemoContext) -> list[DemoStep]`` (what to materialize, in order).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from analytics_platform.common import day_start
from analytics_platform.settings import Settings

# The demo's "today": fixed, so every run produces the same data and the same results.
DEMO_DATE = dt.date(2024, 6, 5)


@dataclass
class DemoContext:
    settings: Settings
    resources: dict[str, Any]
    demo_date: dt.date = DEMO_DATE
    seed: int = 42

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def as_of(self) -> dt.datetime:
        """End of the demo day (00:00 UTC of the next day)."""
        d = self.demo_date + dt.timedelta(days=1)
        return day_start(d)

    def rng(self, domain: str) -> random.Random:
        """A random generator per domain, independent of the order domains run in."""
        return random.Random(f"{self.seed}:{domain}")


@dataclass
class DemoStep:
    selection: list[str]  # asset keys as "a/b"
    partition_key: Optional[str] = None
    partition_range: Optional[tuple[str, str]] = None
    run_config: dict = field(default_factory=dict)
    description: str = ""
    # The faults this step's data plants on purpose (printed as labels, so every WARNING or
    # ERROR the run logs is one the reader was told to expect).
    planted: tuple[str, ...] = ()


def domain_modules() -> list[Any]:
    """The demo module of every domain, in the order the demo runs them."""
    from analytics_platform.demo import cohorts, engagement, kpis, mixpanel, posthog

    return [mixpanel, cohorts, posthog, engagement, kpis]


def domain_name(module: Any) -> str:
    """``analytics_platform.demo.kpis`` -> ``kpis``."""
    return module.__name__.rsplit(".", 1)[-1]
