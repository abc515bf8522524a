"""Shared benchmark plumbing: timing, peak memory, and the result table.

A benchmark module ``benchmarks/bench_<name>.py`` defines
``run(scale: int, workdir: Path) -> list[Measurement]`` and ``DEFAULT_SCALES`` (list of int).
It measures the platform implementation and a straightforward baseline of the same work;
the harness prints throughput, wall time, peak memory and the ratio.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

import psutil


@dataclass
class Measurement:
    benchmark: str
    variant: str  # "platform" or "baseline"
    scale: int  # items processed (events, users, ...)
    unit: str  # what scale counts
    wall_seconds: float
    peak_rss_mb: float
    extra: dict = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.scale / self.wall_seconds if self.wall_seconds > 0 else float("inf")


class PeakMemory:
    """Samples this process's RSS (plus children) every 20 ms; ``peak_mb`` after exit."""

    def __init__(self) -> None:
        self._proc = psutil.Process(os.getpid())
        self._stop = threading.Event()
        self.start_mb = self._rss()
        self.peak_mb = self.start_mb
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> float:
        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._rss())
            time.sleep(0.02)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss())

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.start_mb


@contextmanager
def measure(benchmark: str, variant: str, scale: int, unit: str) -> Iterator[Measurement]:
    """Time the block and record the peak RSS growth it caused."""
    m = Measurement(benchmark, variant, scale, unit, 0.0, 0.0)
    with PeakMemory() as mem:
        start = time.perf_counter()
        yield m
        m.wall_seconds = time.perf_counter() - start
    m.peak_rss_mb = round(mem.growth_mb, 1)
    m.extra.setdefault("cpu_seconds", round(resource.getrusage(resource.RUSAGE_SELF).ru_utime, 1))


def format_table(results: list[Measurement]) -> str:
    """Markdown table with one row per measurement and the platform/baseline ratio."""
    baselines = {(r.benchmark, r.scale): r for r in results if r.variant == "baseline"}
    lines = [
        "| benchmark | variant | scale | wall s | throughput /s | peak RSS growth MB | ratio vs baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base: Optional[Measurement] = baselines.get((r.benchmark, r.scale))
        ratio = (
            f"{base.wall_seconds / r.wall_seconds:.1f}x"
            if base and r.variant != "baseline" and r.wall_seconds > 0
            else ""
        )
        lines.append(
            f"| {r.benchmark} | {r.variant} | {r.scale:,} {r.unit} | {r.wall_seconds:.2f} | "
            f"{r.throughput:,.0f} | {r.peak_rss_mb:.0f} | {ratio} |"
        )
    return "\n".join(lines)


def to_json(results: list[Measurement]) -> str:
    return json.dumps([{**asdict(r), "throughput": r.throughput} for r in results], indent=2)
