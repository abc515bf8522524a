"""The BigQuery API emulator (``local-bigquery==0.3.2``) for the test session.

It runs in a Python 3.13 side environment (default ``<repo>/.venv-bq``, override with
``BQ_EMULATOR_VENV``) created by ``.ci/setup_bigquery_emulator.sh``, started through
``bigquery_emulator_launcher.py`` (offline DuckDB extensions, port 0, ready file) in its
own process group.  Clients use ``google.cloud.bigquery.Client`` with
``AnonymousCredentials`` and ``client_options={"api_endpoint": endpoint}``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .processes import (
    group_kill_command,
    http_answers,
    kill_process_group,
    start_process_group,
    start_watchdog,
    stop_watchdog,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).resolve().parent / "bigquery_emulator_launcher.py"
SETUP_SCRIPT = ".ci/setup_bigquery_emulator.sh"


def emulator_python() -> Path:
    """The side environment's interpreter (may not exist)."""
    venv = os.environ.get("BQ_EMULATOR_VENV") or str(REPO_ROOT / ".venv-bq")
    return Path(venv) / "bin" / "python"


def emulator_available() -> Optional[str]:
    """None when the side environment looks usable, else the reason it is not."""
    python = emulator_python()
    if not python.exists():
        return f"{python} does not exist"
    site = list(python.parent.parent.glob("lib/python3.13/site-packages/local_bigquery"))
    if not site:
        return f"local-bigquery is not installed in {python.parent.parent}"
    return None


@dataclass
class BigQueryEmulator:
    endpoint: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    log_path: Path
    watchdog: Optional[subprocess.Popen] = None

    def stop(self) -> None:
        kill_process_group(self.process)
        stop_watchdog(self.watchdog)


def start_bigquery_emulator(work_dir: Path, timeout: float = 120.0) -> BigQueryEmulator:
    """Start the emulator with its data under ``work_dir``; returns once it answers."""
    work_dir.mkdir(parents=True, exist_ok=True)
    ready = work_dir / "ready"
    log_path = work_dir / "emulator.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["TZ"] = "UTC"
    proc = start_process_group(
        [str(emulator_python()), str(LAUNCHER), "--data-dir", str(work_dir / "data"),
         "--ready-file", str(ready)],
        log_path, env=env, cwd=work_dir,
    )
    try:
        wait_until(ready.exists, timeout, proc, "BigQuery emulator", log_path)
        port = int(ready.read_text().split()[0])
        endpoint = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_answers(f"{endpoint}/bigquery/v2/projects/local/datasets"),
                   30, proc, "BigQuery emulator", log_path)
    except BaseException:
        kill_process_group(proc)
        raise
    watchdog = start_watchdog(group_kill_command(proc.pid))
    return BigQueryEmulator(endpoint=endpoint, process=proc, log_path=log_path, watchdog=watchdog)
