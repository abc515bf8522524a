"""Fixtures of the operations tests.

``seeded_data`` seeds the demo data of the UI test's asset once per session;
``local_platform`` gives a fresh local-default environment (temp DAGSTER_HOME with the
`make dev` instance, temp ANALYTICS_DATA_DIR holding a copy of the demo data);
``dagster_dev`` runs `dagster dev -w workspace.yaml` (webserver + daemon) on one such
environment whose DAGSTER_HOME holds the repository's local instance dagster.yaml (the
production run queue and limits; SQLite storage) for the ops tests (package scope: stopped after the last of them), with every
schedule and sensor stopped first so that only the tests' own runs touch the data.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest

from analytics_platform_tests.ops import harness


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: starts `dagster dev` (webserver + daemon) and headless Chromium; needs .ci/setup_e2e.sh",
    )


@dataclass
class LocalPlatform:
    base: Path
    dagster_home: Path
    data_dir: Path
    env: dict[str, str]
    log: Path
    asset_key: str
    domain: str

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.dagster_home))


@pytest.fixture(scope="session")
def e2e_asset() -> tuple[str, str]:
    """(asset key, domain) the UI and CLI tests drive."""
    return harness.pick_e2e_asset()


def _doc_command_domains() -> set[str]:
    """Domains (asset groups) of the assets the documented CLI commands touch."""
    from analytics_platform.definitions import defs

    graph = defs.get_repository_def().asset_graph
    domains = set()
    for marker in harness.RANGE_COMMANDS:
        one_run = harness.argv_of(harness.doc_command(marker))
        for key in (harness.option(one_run, "--select") or "").split(","):
            if key:
                domains.add(graph.get(dg.AssetKey(key.split("/"))).group_name)
    daemon = harness.argv_of(harness.doc_command(harness.DAEMON_COMMAND))
    job = defs.resolve_job_def(harness.option(daemon, "-j", "--job"))
    domains |= {graph.get(k).group_name for k in job.asset_layer.executable_asset_keys}
    return domains


@pytest.fixture(scope="package")
def seeded_data(tmp_path_factory: pytest.TempPathFactory, e2e_asset: tuple[str, str]) -> Path:
    """ANALYTICS_DATA_DIR with the demo seed of every domain the ops tests drive (copied per use)."""
    base = tmp_path_factory.mktemp("ops-seed")
    data = base / "data"
    env = harness.local_env(base / "dagster_home", data)
    domains = sorted({e2e_asset[1]} | _doc_command_domains())
    harness.seed_demo(domains, env, base / "seed.log")
    return data


def _platform(base: Path, seeded: Path, e2e_asset: tuple[str, str], repo_instance: bool = False) -> LocalPlatform:
    home, data = base / "dagster_home", base / "data"
    harness.write_local_instance(home)
    if repo_instance:  # the repository's dagster.yaml: its run queue limits, retries, monitoring
        shutil.copyfile(harness.REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    shutil.copytree(seeded, data)
    return LocalPlatform(
        base=base, dagster_home=home, data_dir=data, env=harness.local_env(home, data),
        log=base / "commands.log", asset_key=e2e_asset[0], domain=e2e_asset[1],
    )


@pytest.fixture
def local_platform(tmp_path: Path, seeded_data: Path, e2e_asset: tuple[str, str]) -> LocalPlatform:
    return _platform(tmp_path, seeded_data, e2e_asset)


STATES_QUERY = """
query States {
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        schedules { name scheduleState { id status } }
        sensors { name sensorState { id status } }
      }
    }
  }
}
"""


def stop_all_automation(platform: LocalPlatform) -> list[str]:
    """Store STOPPED for every running schedule and sensor (the UI's toggles, via GraphQL)."""
    out = platform.base / "states.json"

    def graphql(document: str) -> dict:
        argv = [str(harness.VENV_BIN / "dagster-graphql"), "-w", "workspace.yaml", "-t", document, "-o", str(out)]
        harness.run_logged(argv, platform.env, platform.log, 300)
        body = json.loads(out.read_text())
        if body.get("errors"):
            raise AssertionError(f"dagster-graphql: {body['errors']}")
        return body["data"]

    nodes = graphql(STATES_QUERY)["repositoriesOrError"]["nodes"]
    mutations, stopped = [], []
    for node in nodes:
        for s in node["schedules"]:
            if s["scheduleState"]["status"] == "RUNNING":
                mutations.append(f'm{len(mutations)}: stopRunningSchedule(id: "{s["scheduleState"]["id"]}") {{ __typename }}')
                stopped.append(s["name"])
        for s in node["sensors"]:
            if s["sensorState"]["status"] == "RUNNING":
                mutations.append(f'm{len(mutations)}: stopSensor(id: "{s["sensorState"]["id"]}") {{ __typename }}')
                stopped.append(s["name"])
    if mutations:
        result = graphql("mutation Stop { " + " ".join(mutations) + " }")
        bad = {k: v for k, v in result.items() if "Error" in v["__typename"]}
        assert not bad, f"could not stop automation: {bad}"
    return stopped


@pytest.fixture(scope="package")  # stopped after the last ops test, not at the end of the whole suite
def dagster_dev(tmp_path_factory: pytest.TempPathFactory, seeded_data: Path, e2e_asset: tuple[str, str]) -> Iterator[tuple[harness.DagsterDev, LocalPlatform]]:
    # The repository's local instance dagster.yaml (SQLite storage under DAGSTER_HOME),
    # so the daemon applies the production run-queue limits to the tests' runs.
    platform = _platform(tmp_path_factory.mktemp("ops-dev"), seeded_data, e2e_asset, repo_instance=True)
    stop_all_automation(platform)
    dev = harness.start_dagster_dev(platform.env, platform.base / "dagster_dev.log")
    try:
        # Dismiss the first-visit dialog the way the UI does when the user closes it.
        assert dev.gql("mutation SetNuxSeen { setNuxSeen }")["setNuxSeen"] is True
        yield dev, platform
    finally:
        dev.stop()
        try:
            harness.copy_to_output(dev.log, "dagster_dev.log")
        except OSError:
            pass
