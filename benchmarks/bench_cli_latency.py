"""Benchmark ``cli_latency``: wall time of the documented CLI commands on the demo data.

Every variant is a whole process, timed from start to exit, ``scale`` times each (the
median is reported, min and max beside it), all in the same run:

* ``platform``: the README's ``weekly_kpi`` dry run,
  ``dagster asset materialize -m analytics_platform.definitions --select app_db/weekly_kpi
  --config-json '{... as_of, threshold_days, dry_run ...}'`` (steps in the run's process);
* ``baseline``: the same command against the same definitions with Dagster's multiprocess
  executor (a fresh subprocess per step: the platform's previous shape);
* ``import_definitions``: ``python -c "import analytics_platform.definitions"`` (what every
  ``dagster`` command pays to load the code location);
* ``floor_import_dagster``: ``python -c "import dagster"``, the floor no command of a
  Dagster code location can go under.

The data: the kpis demo seeded into a fresh ``ANALYTICS_DATA_DIR`` (embedded PostgreSQL),
SQLite instance storage in a fresh ``DAGSTER_HOME``; both stopped/removed afterwards.

    python -m benchmarks run cli_latency --scale 5
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import Measurement

BENCH = "cli_latency"
DEFAULT_SCALES = [5]
REPO = Path(__file__).resolve().parent.parent
DAGSTER = str(Path(sys.executable).with_name("dagster"))
RUN_CONFIG = {"ops": {"app_db__weekly_kpi": {"config": {"as_of": "2024-06-06T00:00:00Z", "threshold_days": 10, "dry_run": True}}}}


def _materialize(module: str) -> list[str]:
    return [DAGSTER, "asset", "materialize", "-m", module, "--select", "app_db/weekly_kpi",
            "--config-json", json.dumps(RUN_CONFIG)]


VARIANTS = {
    "platform": _materialize("analytics_platform.definitions"),
    "baseline": _materialize("benchmarks.cli_multiprocess_defs"),
    "import_definitions": [sys.executable, "-c", "import analytics_platform.definitions"],
    "floor_import_dagster": [sys.executable, "-c", "import dagster"],
}


def _time(argv: list[str], env: dict) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def run(scale: int, workdir: Path, baseline_scale=None) -> list[Measurement]:
    workdir = Path(workdir)
    data, home = workdir / "data", workdir / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "ANALYTICS_DATA_DIR": str(data), "DAGSTER_HOME": str(home), "ANALYTICS_ENV": "local"}
    for name in ("APP_DATABASE_URL", "DAGSTER_PG_HOST", "PYTHONWARNINGS"):
        env.pop(name, None)
    subprocess.run([sys.executable, "-m", "analytics_platform.demo", "--domain", "kpis", "--seed-only"],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    results = []
    try:
        for argv in VARIANTS.values():  # warm-up: file caches, the embedded server's first start
            _time(argv, env)
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(scale):  # interleaved: load drifts hit every variant alike
            for name, argv in VARIANTS.items():
                times[name].append(_time(argv, env))
        for name, samples in times.items():
            results.append(Measurement(
                BENCH, name, 1, "command", round(statistics.median(samples), 3), 0.0,
                extra={"runs": len(samples), "min_s": round(min(samples), 3), "max_s": round(max(samples), 3)},
            ))
    finally:
        subprocess.run([sys.executable, "-m", "analytics_platform.demo", "--stop"], cwd=REPO, env=env,
                       capture_output=True, timeout=120)
    for r in results:
        print(f"{r.variant:>22}: median {r.wall_seconds:.2f} s  (min {r.extra['min_s']:.2f}, max {r.extra['max_s']:.2f}, {r.extra['runs']} runs)")
    return results
