"""The CLI backfill commands of docs/operations.md, run exactly as written there.

* ``backfill-range-one-run`` (and ``-sessions``): ``dagster asset materialize ... --partition-range A...B`` on a
  fresh local instance: exactly ONE run, tagged with the range, materializes every
  partition of A..B.
* ``backfill-daemon``: ``dagster job backfill ...`` against a running `dagster dev` (whose
  instance is the repository's dagster.yaml): a backfill whose runs (one per partition) go
  through the run queue, are launched by the daemon within dagster.yaml's tag limits (no
  more overlap than the tightest limit on the job's tags) and succeed.
"""

from __future__ import annotations

import re
import time

import dagster as dg
import pytest

from analytics_platform_tests.ops import harness

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def _definitions():
    from analytics_platform.definitions import defs

    return defs


def test_docs_commands_are_the_real_cli() -> None:
    """The marked blocks exist and call the documented code location and options."""
    for marker in harness.RANGE_COMMANDS:
        one_run = harness.argv_of(harness.doc_command(marker))
        assert one_run[0].endswith("/dagster") and one_run[1:3] == ["asset", "materialize"]
        assert harness.option(one_run, "-m", "--module-name") == "analytics_platform.definitions"
        assert "..." in (harness.option(one_run, "--partition-range") or "")

    daemon = harness.argv_of(harness.doc_command(harness.DAEMON_COMMAND))
    assert daemon[0].endswith("/dagster") and daemon[1:3] == ["job", "backfill"]
    assert harness.option(daemon, "-w", "--workspace") == "workspace.yaml"
    assert harness.option(daemon, "-l", "--location") == harness.LOCATION
    assert "--noprompt" in daemon  # CI has no standard input


@pytest.mark.parametrize("marker", harness.RANGE_COMMANDS)
def test_partition_range_in_one_run(local_platform, marker: str) -> None:
    argv = harness.argv_of(harness.doc_command(marker))
    key = dg.AssetKey(harness.option(argv, "--select").split("/"))
    first, last = harness.option(argv, "--partition-range").split("...")

    harness.run_logged(argv, local_platform.env, local_platform.log, 600)

    instance = local_platform.instance()
    runs = instance.get_runs()
    assert len(runs) == 1, f"expected ONE run for the range, got {[r.run_id for r in runs]}"
    run = runs[0]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags.get("dagster/asset_partition_range_start") == first
    assert run.tags.get("dagster/asset_partition_range_end") == last

    partitions_def = _definitions().get_repository_def().asset_graph.get(key).partitions_def
    expected = partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
    assert len(expected) >= 2, "the documented range should span several partitions"
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=list(expected)), limit=1000
    ).records
    materialized = sorted({r.partition_key for r in records if r.run_id == run.run_id})
    assert materialized == sorted(expected)


RUNS_BY_TAG = """
query Runs($key: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $key, value: $value}]}) {
    __typename
    ... on Runs { results { runId status jobName startTime endTime tags { key value } } }
  }
}
"""

RUN_EVENTS = """
query Events($runId: ID!) {
  logsForRun(runId: $runId, limit: 1000) {
    ... on EventConnection { events { __typename } }
  }
}
"""

BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id partitionNames partitionSetName }
  }
}
"""


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_daemon_backfill_command(dagster_dev) -> None:
    dev, platform = dagster_dev
    argv = harness.argv_of(harness.doc_command(harness.DAEMON_COMMAND))
    job = harness.option(argv, "-j", "--job")
    first, last = harness.option(argv, "--from"), harness.option(argv, "--to")

    out = harness.run_logged(argv, dev.env, platform.log, 600).stdout
    m = re.search(r"Launched backfill job `([^`]+)`", out)
    assert m, f"no backfill id in the CLI output:\n{out}"
    backfill_id = m.group(1)

    partitions_def = _definitions().resolve_job_def(job).partitions_def
    expected = partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))

    backfill = dev.gql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
    assert backfill["__typename"] == "PartitionBackfill", backfill
    assert sorted(backfill["partitionNames"]) == sorted(expected)

    deadline = time.monotonic() + 600
    while True:  # the daemon's run queue launches the submitted runs
        runs = dev.gql(RUNS_BY_TAG, {"key": "dagster/backfill", "value": backfill_id})["runsOrError"]["results"]
        if len(runs) == len(expected) and all(r["status"] in TERMINAL for r in runs):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"backfill {backfill_id} runs not finished: {runs}\n{dev.log_tail()}")
        time.sleep(3)

    assert {r["status"] for r in runs} == {"SUCCESS"}, runs
    assert {r["jobName"] for r in runs} == {job}
    partitions = sorted({t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition"})
    assert partitions == sorted(expected)
    for run in runs:  # queued by the CLI, launched by the daemon
        kinds = {e["__typename"] for e in dev.gql(RUN_EVENTS, {"runId": run["runId"]})["logsForRun"]["events"]}
        assert {"RunEnqueuedEvent", "RunStartingEvent", "RunSuccessEvent"} <= kinds, kinds

    # The run queue applied dagster.yaml's tag limits to the runs (all submitted at once).
    # (docs/operations.md says so for the documented job.)
    limit = _tag_limit(runs[0]["tags"])
    assert limit is not None, f"the runs of {job} carry no tag limited in dagster.yaml: {runs[0]['tags']}"
    windows = [(r["startTime"], r["endTime"]) for r in runs]
    peak = max(sum(1 for s, e in windows if s <= t < e) for t, _ in windows)
    assert peak <= limit, f"{peak} runs of {job} ran at once; dagster.yaml allows {limit}: {windows}"


def _tag_limit(tags: list[dict]) -> int | None:
    """The tightest tag_concurrency_limits entry of the instance dagster.yaml matching ``tags``."""
    import yaml

    config = yaml.safe_load((harness.REPO_ROOT / "dagster.yaml").read_text())
    limits = config.get("concurrency", {}).get("runs", {}).get("tag_concurrency_limits", [])
    run_tags = {t["key"]: t["value"] for t in tags}
    matching = [
        entry["limit"] for entry in limits
        if entry["key"] in run_tags and ("value" not in entry or entry["value"] == run_tags[entry["key"]])
    ]
    return min(matching) if matching else None
