"""End to end through the UI's own API: `dagster dev` (webserver + daemon) on the local default.

The tests share one `dagster dev` (fixture ``dagster_dev``, whose instance is the
repository's dagster.yaml) and run in file order:

1. the webserver lists exactly the schedules, sensors and jobs of docs/operations.md;
2. one partition is materialized the way the UI's *Materialize* button does it
   (``launchPipelineExecution`` on the implicit asset job with a ``dagster/partition`` tag),
   and the new materialization and its metadata are read back through GraphQL and
   checked against the warehouse;
3. a two-partition backfill is launched the way the UI's partition dialog does it
   (``launchPartitionBackfill``); the daemon runs it to completion;
4. headless Chromium renders the asset graph: a screenshot is left in
   ``test-output/asset_graph.png`` and the rendered DOM names the assets.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import pytest

from analytics_platform_tests.ops import harness, inventory

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TERMINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
TERMINAL_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

AUTOMATION_QUERY = """
query Automation($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository {
      schedules { name cronSchedule executionTimezone pipelineName }
      sensors { name minIntervalSeconds targets { pipelineName } }
      jobs { name isAssetJob }
    }
    ... on PythonError { message }
  }
}
"""

ASSET_NODE_QUERY = """
query AssetNode($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode { id jobNames opNames isPartitioned groupName }
  }
}
"""

# The mutation the UI's Materialize button sends (LaunchRootExecutionButton).
LAUNCH_RUN = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { id runId pipelineName } }
    ... on Error { message }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
  }
}
"""

# The mutation the UI's partition dialog sends for more than one partition.
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId launchedRunIds }
    ... on PartitionKeysNotFoundError { message partitionKeys }
    ... on Error { message }
    ... on PythonError { message stack }
  }
}
"""

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName tags { key value } assetSelection { path } }
  }
}
"""

RUN_ERRORS_QUERY = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId, limit: 500) {
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { error { message } }
      }
    }
  }
}
"""

BACKFILL_QUERY = """
query Backfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id status isAssetBackfill numPartitions partitionNames
      runs { runId status tags { key value } }
      error { message }
    }
    ... on Error { message }
  }
}
"""

MATERIALIZATIONS_QUERY = """
query Materializations($assetKey: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $assetKey) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions, limit: 20) {
        runId partition timestamp
        metadataEntries {
          __typename label
          ... on IntMetadataEntry { intValue intRepr }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
          ... on JsonMetadataEntry { jsonString }
        }
      }
    }
  }
}
"""

# Count of rows of one partition, per candidate asset (BigQuery SQL, run on DuckDB).
PARTITION_ROW_COUNT_SQL = {
    "mixpanel_data/mixpanel_events": (
        "SELECT COUNT(*) AS n FROM `mixpanel_data.mixpanel_events` "
        "WHERE DATE(event_timestamp) = @day"
    ),
    "posthog_aggregated/sessions": (
        "SELECT COUNT(*) AS n FROM `posthog_aggregated.sessions` WHERE session_date = @day"
    ),
}


def _path(key: str) -> dict:
    return {"path": key.split("/")}


def _selector() -> dict:
    return {"repositoryLocationName": harness.LOCATION, "repositoryName": harness.REPOSITORY}


def _days_before(day: str, n: int) -> str:
    return (dt.date.fromisoformat(day) - dt.timedelta(days=n)).isoformat()


def _wait_run(dev: harness.DagsterDev, run_id: str, timeout: float = 420) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = dev.gql(RUN_QUERY, {"runId": run_id})["runOrError"]
        if run.get("status") in TERMINAL_RUN:
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} not finished after {timeout}s (status {run.get('status')})\n{dev.log_tail()}")
        time.sleep(2)


def _run_failure_text(dev: harness.DagsterDev, run_id: str) -> str:
    events = dev.gql(RUN_ERRORS_QUERY, {"runId": run_id})["logsForRun"].get("events", [])
    lines = [
        (e.get("error") or {}).get("message") or e.get("message", "")
        for e in events
        if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent", "EngineEvent")
    ]
    return "\n".join(line for line in lines if line)[-6000:]


def _assert_success(dev: harness.DagsterDev, run: dict) -> None:
    if run["status"] != "SUCCESS":
        pytest.fail(f"run {run['runId']} ended {run['status']}:\n{_run_failure_text(dev, run['runId'])}")


def _materializations(dev: harness.DagsterDev, key: str, partitions: list[str]) -> list[dict]:
    data = dev.gql(MATERIALIZATIONS_QUERY, {"assetKey": _path(key), "partitions": partitions})
    asset = data["assetOrError"]
    assert asset["__typename"] == "Asset", asset
    return asset["assetMaterializations"]


def _metadata(mat: dict) -> dict:
    out = {}
    for entry in mat["metadataEntries"]:
        for field in ("intValue", "floatValue", "text", "jsonString"):
            if field in entry and entry[field] is not None:
                out[entry["label"]] = entry[field]
                break
        else:
            if entry.get("intRepr") is not None:
                out[entry["label"]] = int(entry["intRepr"])
    return out


def _warehouse_rows(platform, key: str, day: str) -> int:
    from analytics_platform.resources.warehouse import DuckDBWarehouse

    sql = PARTITION_ROW_COUNT_SQL[key]
    df = DuckDBWarehouse(path=str(platform.data_dir / "warehouse.duckdb")).query(
        sql, {"day": dt.date.fromisoformat(day)}
    )
    return int(df.iloc[0]["n"])


# ---------------------------------------------------------------------------------------
def test_webserver_lists_the_documented_automation(dagster_dev) -> None:
    dev, _ = dagster_dev
    repo = dev.gql(AUTOMATION_QUERY, {"selector": _selector()})["repositoryOrError"]
    assert repo["__typename"] == "Repository", repo
    docs = {e.ident: e for e in inventory.doc_entries()}

    shown = {("schedule", s["name"]) for s in repo["schedules"]}
    shown |= {("sensor", s["name"]) for s in repo["sensors"]}
    shown |= {("job", j["name"]) for j in repo["jobs"] if not j["name"].startswith("__")}
    assert shown == set(docs), (
        f"in the UI, not in docs: {sorted(shown - set(docs))}; in docs, not in the UI: {sorted(set(docs) - shown)}"
    )
    for s in repo["schedules"]:
        row = docs[("schedule", s["name"])]
        assert (s["cronSchedule"], s["executionTimezone"], s["pipelineName"]) == (row.cron, "UTC", row.target)
    for s in repo["sensors"]:
        assert f"every {s['minIntervalSeconds']} s" == docs[("sensor", s["name"])].cron


def test_materialize_one_partition_like_the_ui(dagster_dev) -> None:
    dev, platform = dagster_dev
    key, partition = platform.asset_key, harness.DEMO_DATE
    node = dev.gql(ASSET_NODE_QUERY, {"assetKey": _path(key)})["assetNodeOrError"]
    assert node["__typename"] == "AssetNode" and node["isPartitioned"], node
    job = next(j for j in node["jobNames"] if j.startswith("__ASSET_JOB"))

    launched = dev.gql(
        LAUNCH_RUN,
        {
            "executionParams": {
                "mode": "default",
                "runConfigData": {},
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
                "selector": {**_selector(), "pipelineName": job, "assetSelection": [_path(key)]},
            }
        },
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    run = _wait_run(dev, run_id)
    _assert_success(dev, run)
    assert {t["key"]: t["value"] for t in run["tags"]}.get("dagster/partition") == partition

    mats = [m for m in _materializations(dev, key, [partition]) if m["runId"] == run_id]
    assert len(mats) == 1, f"expected one materialization of {key} [{partition}] by run {run_id}: {mats}"
    meta = _metadata(mats[0])
    assert mats[0]["partition"] == partition
    assert "dagster/row_count" in meta, f"no dagster/row_count in {sorted(meta)}"
    rows_in_warehouse = _warehouse_rows(platform, key, partition)
    assert rows_in_warehouse > 0, f"the demo data has no rows of {key} on {partition}"
    assert meta["dagster/row_count"] == rows_in_warehouse


def test_two_partition_backfill_like_the_ui(dagster_dev) -> None:
    dev, platform = dagster_dev
    key = platform.asset_key
    partitions = [_days_before(harness.DEMO_DATE, 2), _days_before(harness.DEMO_DATE, 1)]
    launched = dev.gql(
        LAUNCH_BACKFILL,
        {
            "backfillParams": {
                "assetSelection": [_path(key)],
                "partitionNames": partitions,
                "fromFailure": False,
                "tags": [{"key": "analytics_platform/source", "value": "e2e-test"}],
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    deadline = time.monotonic() + 480
    while True:  # the daemon's backfill loop requests the runs, the run queue launches them
        backfill = dev.gql(BACKFILL_QUERY, {"backfillId": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        runs_done = backfill["runs"] and all(r["status"] in TERMINAL_RUN for r in backfill["runs"])
        if backfill["status"] in TERMINAL_BACKFILL and runs_done:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"backfill {backfill_id} not complete: {backfill}\n{dev.log_tail()}")
        time.sleep(3)

    for run in backfill["runs"]:
        _assert_success(dev, run)
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    assert backfill["isAssetBackfill"] and sorted(backfill["partitionNames"]) == partitions

    run_ids = {r["runId"] for r in backfill["runs"]}
    mats = [m for m in _materializations(dev, key, partitions) if m["runId"] in run_ids]
    assert sorted(m["partition"] for m in mats) == partitions, mats
    for mat in mats:
        assert "dagster/row_count" in _metadata(mat)


def _render(dev: harness.DagsterDev, path: str, name: str, profile: Path) -> str:
    """Screenshot ``path`` into test-output/NAME.png and return the rendered DOM."""
    shot = profile.parent / f"{name}.png"
    result = harness.chromium(
        f"{dev.url}{path}", profile, f"--screenshot={shot}", "--dump-dom",
        "--window-size=1600,1200", "--virtual-time-budget=30000",
    )
    assert shot.exists() and shot.stat().st_size > 10_000, (
        f"no screenshot of {path} (exit {result.returncode}): {result.stderr[-3000:]}"
    )
    harness.copy_to_output(shot, f"{name}.png")
    (harness.TEST_OUTPUT / f"{name}.html").write_text(result.stdout)
    return result.stdout


def _names(dom: str, name: str) -> bool:
    return f'data-tooltip="{name}"' in dom or f">{name}<" in dom


def test_asset_graph_screenshot(dagster_dev, tmp_path: Path) -> None:
    """The asset graph as a person sees it: global lineage (one node per group), then each
    group's graph, whose DOM must name every asset of the group (external sources too)."""
    harness.chromium_or_fail()  # no silent skip: says to run .ci/setup_e2e.sh
    dev, platform = dagster_dev
    from analytics_platform.definitions import defs

    graph = defs.get_repository_def().asset_graph
    groups: dict[str, list] = {}
    for key in graph.get_all_asset_keys():
        groups.setdefault(graph.get(key).group_name, []).append(key)

    dom = _render(dev, "/asset-groups", "asset_graph", tmp_path / "profile-global")
    assert "Join the Dagster community" not in dom, "the first-visit dialog was not dismissed (setNuxSeen)"
    assert "Global asset lineage" in dom
    assert [g for g in groups if not _names(dom, g)] == [], f"groups missing from the global graph: {sorted(groups)}"

    for group, keys in sorted(groups.items()):
        dom = _render(
            dev, f"/locations/{harness.LOCATION}/asset-groups/{group}", f"asset_graph_{group}",
            tmp_path / f"profile-{group}",
        )
        missing = [k.to_user_string() for k in keys if not _names(dom, k.path[-1])]
        assert not missing, f"the {group} graph does not name {missing} (test-output/asset_graph_{group}.png)"
        materializable = [k for k in keys if graph.get(k).is_materializable]
        button = re.search(r">Materialize(?: all)?(?: \((\d+)\))?…?<", dom)
        assert bool(button) == bool(materializable), f"the {group} graph: Materialize button {button}"
        if button and button.group(1):  # partitioned groups show the count
            assert int(button.group(1)) == len(materializable), (button.group(0), materializable)
    assert (harness.TEST_OUTPUT / "asset_graph.png").stat().st_size > 10_000
