"""Helpers for the operations tests: a local-default environment, `dagster dev` in its own
process group, the webserver's GraphQL API, the doc's marked commands, headless Chromium.

Nothing here mocks Dagster: the tests drive the real webserver, daemon and CLI.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import requests

from analytics_platform.demo import DEMO_DATE as _DEMO_DATE

from analytics_platform_tests.infra.processes import (
    free_port,
    kill_process_group,
    start_process_group,
    tail,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
OPERATIONS_DOC = REPO_ROOT / "docs" / "operations.md"
TEST_OUTPUT = REPO_ROOT / "test-output"
CHROMIUM = Path("/usr/bin/chromium")
LOCATION = "analytics_platform"
REPOSITORY = "__repository__"
DEMO_DATE = _DEMO_DATE.isoformat()  # the demo's fixed "today" (2024-06-05)

# The marked CLI blocks of docs/operations.md that materialize a range in one run.
RANGE_COMMANDS = ("backfill-range-one-run", "backfill-range-one-run-sessions")
DAEMON_COMMAND = "backfill-daemon"

# Partitioned assets the UI test may drive, best first: cheap, no external service on the
# local default, demo data from their domain's seed.  The first one that exists wins.
E2E_CANDIDATES: Sequence[tuple[str, str]] = (
    ("mixpanel_data/mixpanel_events", "mixpanel"),
    ("posthog_aggregated/sessions", "posthog"),
)


# ----------------------------------------------------------------------------------------
# environment
# ----------------------------------------------------------------------------------------
def contract_variables() -> list[str]:
    """Every variable of design.md's environment contract (settings.py knows them all)."""
    from analytics_platform.settings import _ENV_TO_FIELD

    return list(_ENV_TO_FIELD)


def local_env(dagster_home: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    """The process environment of the local default: no service configured, temp state."""
    drop = set(contract_variables())
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith("DAGSTER_PG_") and k != "DAGSTER_HOME"
    }
    env.update(
        DAGSTER_HOME=str(dagster_home),
        ANALYTICS_ENV="local",
        ANALYTICS_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


def write_local_instance(dagster_home: Path) -> None:
    """The instance `make dev` uses: SQLite under DAGSTER_HOME, default queued runs."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")


def seed_demo(domains: Sequence[str], env: Mapping[str, str], log: Path) -> None:
    """`python -m analytics_platform.demo --seed-only --domain D ...` (README command 1's seed)."""
    argv = [sys.executable, "-m", "analytics_platform.demo", "--seed-only"]
    for domain in domains:
        argv += ["--domain", domain]
    run_logged(argv, env, log, 300)


def run_logged(argv: Sequence[str], env: Mapping[str, str], log: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run ``argv`` from the repository root; append its output to ``log``; raise on failure."""
    proc = subprocess.run(
        list(argv), cwd=REPO_ROOT, env=dict(env), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"$ {shlex.join(argv)}\n{proc.stdout}\n{proc.stderr}\n(exit {proc.returncode})\n")
    if proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {shlex.join(argv)}\n--- stdout ---\n{proc.stdout[-4000:]}"
            f"\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def pick_e2e_asset() -> tuple[str, str]:
    """(asset key, domain) of the first candidate that exists and whose domain has demo data."""
    from analytics_platform.definitions import defs

    graph = defs.get_repository_def().asset_graph
    keys = {  # materializable and partitioned (an external AssetSpec of the key does not count)
        k.to_user_string()
        for k in graph.get_all_asset_keys()
        if graph.get(k).is_materializable and graph.get(k).partitions_def is not None
    }
    tried = []
    for key, domain in E2E_CANDIDATES:
        has_demo = (REPO_ROOT / "analytics_platform" / "demo" / f"{domain}.py").exists()
        if key in keys and has_demo:
            return key, domain
        tried.append(f"{key} (partitioned asset: {key in keys}, demo/{domain}.py: {has_demo})")
    raise AssertionError("no partitioned asset with demo data for the UI test: " + "; ".join(tried))


# ----------------------------------------------------------------------------------------
# the commands in docs/operations.md
# ----------------------------------------------------------------------------------------
def doc_command(marker: str, doc: Path = OPERATIONS_DOC) -> str:
    """The command in the fenced block right after ``<!-- command: MARKER -->``.

    Backslash-newline continuations are joined; comment lines are dropped.
    """
    text = doc.read_text(encoding="utf-8")
    m = re.search(
        rf"<!--\s*command:\s*{re.escape(marker)}\s*-->\s*```[a-z]*\n(.*?)```", text, flags=re.S
    )
    if not m:
        raise AssertionError(f"docs/operations.md has no block marked <!-- command: {marker} -->")
    lines = [ln for ln in m.group(1).splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return " ".join(ln.rstrip().rstrip("\\").strip() for ln in lines)


def argv_of(command: str) -> list[str]:
    """Split a documented command; `dagster`/`python` resolve to this virtualenv's."""
    argv = shlex.split(command)
    if argv and argv[0] in ("dagster", "dagster-graphql", "dagster-daemon"):
        argv[0] = str(VENV_BIN / argv[0])
    elif argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def option(argv: Sequence[str], *names: str) -> Optional[str]:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


# ----------------------------------------------------------------------------------------
# the webserver's GraphQL API
# ----------------------------------------------------------------------------------------
class GraphQLError(AssertionError):
    pass


class GraphQL:
    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()

    def __call__(self, query: str, variables: Optional[dict] = None, timeout: float = 60) -> dict:
        response = self.session.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=timeout,
        )
        if response.status_code != 200:
            raise GraphQLError(f"GraphQL HTTP {response.status_code}: {response.text[:2000]}")
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(f"GraphQL errors: {json.dumps(body['errors'])[:4000]}")
        return body["data"]


# ----------------------------------------------------------------------------------------
# dagster dev
# ----------------------------------------------------------------------------------------
WORKSPACE_QUERY = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name } }
          ... on PythonError { message stack }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

DAEMON_QUERY = """
query DaemonHealth {
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}
"""

REQUIRED_DAEMONS = {"SCHEDULER", "SENSOR", "BACKFILL", "QUEUED_RUN_COORDINATOR"}


@dataclass
class DagsterDev:
    """A running `dagster dev -w workspace.yaml` (webserver + daemon) in its own process group."""

    proc: subprocess.Popen
    url: str
    log: Path
    env: dict[str, str]

    @property
    def gql(self) -> GraphQL:
        return GraphQL(self.url)

    def stop(self) -> None:
        # `dagster dev` forwards SIGTERM to the webserver, daemon and code servers of its group.
        kill_process_group(self.proc, timeout=20)

    def log_tail(self, chars: int = 6000) -> str:
        return tail(self.log, chars)


def start_dagster_dev(env: dict[str, str], log: Path, timeout: float = 300) -> DagsterDev:
    """Start `dagster dev`; return once the code location is loaded and the daemons are healthy."""
    last: Optional[Exception] = None
    for _ in range(3):  # the port may be taken between free_port() and bind
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [str(VENV_BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
        proc = start_process_group(argv, log, env=env, cwd=REPO_ROOT)
        dev = DagsterDev(proc=proc, url=url, log=log, env=env)
        try:
            _wait_ready(dev, timeout)
            return dev
        except Exception as exc:  # noqa: BLE001
            last = exc
            dev.stop()
            if "address already in use" not in tail(log).lower():
                raise
    raise AssertionError(f"dagster dev did not start: {last}")


def _wait_ready(dev: DagsterDev, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    gql = dev.gql

    def location_loaded() -> bool:
        try:
            data = gql(WORKSPACE_QUERY, timeout=10)
        except (requests.RequestException, GraphQLError, ValueError):
            return False
        entries = data["workspaceOrError"].get("locationEntries") or []
        for entry in entries:
            loaded = entry["locationOrLoadError"]
            if loaded and loaded["__typename"] == "PythonError":
                raise AssertionError(f"code location {entry['name']} failed to load: {loaded['message']}")
            if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED" and loaded:
                return True
        return False

    wait_until(location_loaded, max(deadline - time.monotonic(), 1), dev.proc, "dagster dev (webserver)", dev.log)

    def daemons_healthy() -> bool:
        try:
            statuses = gql(DAEMON_QUERY, timeout=10)["instance"]["daemonHealth"]["allDaemonStatuses"]
        except (requests.RequestException, GraphQLError, ValueError):
            return False
        healthy = {s["daemonType"] for s in statuses if s["healthy"]}
        return REQUIRED_DAEMONS <= healthy

    wait_until(daemons_healthy, max(deadline - time.monotonic(), 1), dev.proc, "dagster dev (daemon)", dev.log)


# ----------------------------------------------------------------------------------------
# headless Chromium
# ----------------------------------------------------------------------------------------
def chromium_or_fail() -> Path:
    if not CHROMIUM.exists() or not os.access(CHROMIUM, os.X_OK):
        raise AssertionError(
            f"{CHROMIUM} not found: the UI end-to-end test needs Debian's chromium. "
            "Run `bash .ci/setup_e2e.sh` (apt-get install chromium) first."
        )
    return CHROMIUM


def chromium(url: str, profile: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run headless Chromium once on ``url`` (in its own process group; killed on timeout)."""
    argv = [
        str(chromium_or_fail()), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
        f"--user-data-dir={profile}", *args, url,
    ]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_process_group(proc, timeout=5)
        out, err = proc.communicate()
        raise AssertionError(f"chromium timed out after {timeout}s on {url}\n{err[-3000:]}")
    finally:
        if proc.poll() is None:
            kill_process_group(proc, timeout=5)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def copy_to_output(src: Path, name: str) -> Path:
    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
    dest = TEST_OUTPUT / name
    shutil.copyfile(src, dest)
    return dest
