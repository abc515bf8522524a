"""Materialize one asset of the code location in a process of its own (reliability tests).

    python -m analytics_platform_tests.reliability.runner --select a/b [--partition P]
        [--run-config JSON] [--batch-rows N [--block-bytes B]]
        [--barrier DIR --parties N --at POINT]          # wait for N processes at POINT
        [--pause-at POINT --after K --flag FILE]        # stop for good at POINT (to be killed)

Resources come from the environment exactly as in ``dagster asset materialize`` (the merged
``analytics_platform.definitions.defs``); the run is recorded in ``$DAGSTER_HOME``.

POINTs (hooks on the code under test, nothing else is changed):

* ``ingest_load``   — mixpanel ingestion, around each batch load (``EventsLoader.load_events``);
  a barrier waits before the first load, a pause happens after the K-th load has committed;
* ``sessions_merge`` — posthog sessions, before the MERGE statement;
* ``signals_txn`` — engagement signals, at the start of the run's transaction (before its
  first statement, the schema check that takes the domain's advisory lock);
* ``signals_write`` — engagement signals, inside the run's transaction, after the K-th table
  was replaced (K=1: the signals rows are deleted and copied, not yet committed).

Exit code 0 when the run succeeded, 3 when it failed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path


def _barrier(directory: str, parties: int, timeout: float = 180.0) -> None:
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.iterdir())) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {directory}: {parties} parties never arrived")
        time.sleep(0.01)


def _pause(flag: str) -> None:
    Path(flag).write_text(str(os.getpid()))
    print(f"paused at the kill point (pid {os.getpid()})", flush=True)
    time.sleep(3600)


class _Hook:
    """Calls ``before(n)`` / ``after(n)`` around the n-th call (1-based) of a function."""

    def __init__(self, before=None, after=None) -> None:
        self.calls = 0
        self.before = before
        self.after = after

    def wrap(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            self.calls += 1
            n = self.calls
            if self.before:
                self.before(n)
            out = fn(*args, **kwargs)
            if self.after:
                self.after(n)
            return out

        return wrapper


def install_hooks(args: argparse.Namespace) -> None:
    def barrier_once(n: int) -> None:
        if n == 1:
            _barrier(args.barrier, args.parties)

    def pause_at(k: int):
        def check(n: int) -> None:
            if n == k:
                _pause(args.flag)

        return check

    points = {args.at, args.pause_at} - {None}
    if "ingest_load" in points:
        from analytics_platform.mixpanel import store as ingest

        hook = _Hook(
            before=barrier_once if args.at == "ingest_load" else None,
            after=pause_at(args.after) if args.pause_at == "ingest_load" else None,
        )
        ingest.EventsLoader.load_events = hook.wrap(ingest.EventsLoader.load_events)
    if "sessions_merge" in points:
        from analytics_platform.resources import warehouse as W

        original_execute = W.DuckDBWarehouse.execute

        def execute(self, sql, params=None):
            if "MERGE" in sql and "sessions" in sql:
                _barrier(args.barrier, args.parties)
            return original_execute(self, sql, params)

        W.DuckDBWarehouse.execute = execute
    if "signals_txn" in points:
        from analytics_platform.engagement import store

        hook = _Hook(before=barrier_once)
        store.compute_aggregates = hook.wrap(store.compute_aggregates)
    if "signals_write" in points:
        from analytics_platform.engagement import store

        hook = _Hook(after=pause_at(args.after))
        store.replace_partition_rows = hook.wrap(store.replace_partition_rows)
    if args.batch_rows:  # small batches: a day is loaded in several commits
        from analytics_platform.mixpanel import export_parse, store

        store.ingest_ranges = functools.partial(store.ingest_ranges, batch_rows=args.batch_rows)
        store.ExportParser = functools.partial(export_parse.ExportParser, block_bytes=args.block_bytes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--select", required=True)
    parser.add_argument("--partition")
    parser.add_argument("--run-config")
    parser.add_argument("--batch-rows", type=int)
    parser.add_argument("--block-bytes", type=int, default=32 * 1024)
    parser.add_argument("--barrier")
    parser.add_argument("--parties", type=int, default=2)
    parser.add_argument("--at")
    parser.add_argument("--pause-at")
    parser.add_argument("--after", type=int, default=1)
    parser.add_argument("--flag")
    args = parser.parse_args(argv)

    import dagster as dg

    install_hooks(args)
    from analytics_platform.definitions import defs

    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        assets=[*defs.assets, *(defs.asset_checks or [])],
        selection=dg.AssetSelection.assets(dg.AssetKey(args.select.split("/"))),
        partition_key=args.partition,
        run_config=json.loads(args.run_config) if args.run_config else None,
        resources=defs.resources,
        instance=instance,
        raise_on_error=False,
    )
    summary = {"success": result.success, "run_id": result.run_id}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        summary["metadata"] = {
            k: v.value for k, v in mat.metadata.items() if isinstance(getattr(v, "value", None), (int, float, str))
        }
    if not result.success:
        summary["errors"] = [str(e.message) for e in result.all_events if e.is_failure]
    print("RESULT " + json.dumps(summary, default=str), flush=True)
    return 0 if result.success else 3


if __name__ == "__main__":
    sys.exit(main())
