"""mixpanel_ingest: Mixpanel export (stub server, HTTP, gzip) -> local DuckDB warehouse.

Every variant reads the same served bytes in the same run:

* ``platform``: ``analytics_platform.mixpanel.store.ingest_ranges`` — the export streamed
  to a temp file and parsed while it downloads (string views into its blocks, DuckDB's
  JSON functions, 200k-row batches, a background thread up to two batches ahead), each
  batch inserted once the download is complete with one ``INSERT`` of the rows whose
  ``event_id`` is not loaded yet (pruned to its event dates).  It runs in a child process whose imports come
  from this tree, or from ``MIXPANEL_BENCH_BEFORE`` for a ``platform_before`` variant
  (before/after interleaved in the same run).
* ``baseline``: what the old collector did — ``requests`` line iteration, one
  ``json.loads`` per line, and one INSERT per row (into the same kind of DuckDB table).
  It is slow, so by default it runs at ``min(scale, 100_000)`` events and its time is
  extrapolated linearly to ``scale`` (said in ``extra``).
* ``json_batched``: the fair batched baseline — one ``json.loads`` per line, one bulk
  insert per 200k-row batch (benchmarks/mixpanel_baselines.py).
* ``orjson_arrow``: the best straightforward one — ``orjson`` per line and an Arrow batch
  inserted into the same table with the platform's own dedup statement.
* ``parse_only``: ``orjson.loads`` over the lines of the same (decompressed) file, nothing
  stored: the parse limit.
* ``download_only``: the platform's HTTP client alone (the gzip stream received,
  decompressed and written to a file), nothing parsed: the transfer's own cost here.

The export file (about 500 bytes per event, ``$insert_id`` on every event, 1% duplicated
ids, a third of the times in milliseconds) is generated before timing starts.  The stub
runs in its own process (its gzip CPU is the server's, not ours) and is a child of this
one, so the harness's peak-RSS figure includes it.  ``extra.cpu_seconds_self`` is this
process's CPU time for the variant (user + system, DuckDB's threads included): the "one
core" cost, also as ``events_per_cpu_second``; ``extra.stub_cpu_seconds`` is the stub's
(serving + gzip), reported apart; ``load_average_start``/``load_average_end`` (1-minute)
say how busy the machine was, so wall-clock figures can be read.  A one-line summary per
variant is printed to stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import psutil

from benchmarks.harness import Measurement, measure

DEFAULT_SCALES = [1_000_000, 5_000_000]
BENCH = "mixpanel_ingest"
DAY = dt.date(2024, 6, 5)
EVENT = "impression_game_started"
BASELINE_MAX = 100_000

_SERVER = r"""
import sys, time
from analytics_platform_tests.stubs.mixpanel import MixpanelStub
stub = MixpanelStub(require_auth=False, gzip=True)
stub.add_file(sys.argv[1], sys.argv[2])
stub.start()
print(stub.url, flush=True)
sys.stdin.read()  # serve until the parent closes our stdin
stub.stop()
"""


def write_export(path: Path, count: int, day: dt.date = DAY) -> int:
    """``count`` export lines of about 500 bytes; returns the bytes written."""
    base = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())
    step = 86_400 / max(count, 1)
    template = (
        '{"event":"' + EVENT + '","properties":{"time":%d,"distinct_id":"user-%d","$insert_id":"ins-%d",'
        '"mp_processing_time_ms":%d,"$device_id":"device-%d","$os":"%s","mp_os":"%s",'
        '"$app_version_string":"5.12.%d","$model":"Pixel 7","mp_country_code":"IL","$city":"Tel Aviv",'
        '"mp_lib":"android","level":%d,"coins":%d,"session_id":"s-%d","screen":"board",'
        '"ab_group":"B","payload":"%s"}}\n'
    )
    pad = "x" * 110
    size = 0
    with open(path, "w", encoding="utf-8", buffering=1 << 22) as out:
        for i in range(count):
            seconds = base + int(i * step)
            ms = i % 3 == 1
            ident = i - 1 if i % 100 == 99 else i  # 1% duplicated $insert_id
            os_name = "Android" if i % 3 else "iOS"
            line = template % (
                seconds * 1000 + i % 1000 if ms else seconds, i % 50_000, ident, seconds * 1000 + 1500,
                i % 50_000, os_name, os_name, i % 4, i % 300, (i * 7919) % 100_000, (i * 104729) % 10**9, pad,
            )
            out.write(line)
            size += len(line)
    return size


class _Stub:
    """The Mixpanel stub in a child process, serving ``path`` for ``day``."""

    def __init__(self, path: Path, day: dt.date) -> None:
        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, day.isoformat(), str(path)],
            cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError("the Mixpanel stub did not start")

    def cpu_seconds(self) -> float:
        """The stub process's CPU time so far (user + system)."""
        try:
            times = psutil.Process(self.proc.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return times.user + times.system

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            self.proc.kill()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _summary(m: Measurement) -> None:
    x = m.extra
    print(
        f"[{BENCH}] {m.variant} {m.scale:,} events: wall {m.wall_seconds:.1f}s "
        f"({m.throughput:,.0f}/s), CPU {x.get('cpu_seconds_self')}s "
        f"({x.get('events_per_cpu_second', 0):,}/CPU-s), stub CPU {x.get('stub_cpu_seconds', '-')}s, "
        f"load {x.get('load_average_start')} -> {x.get('load_average_end')}, peak RSS +{m.peak_rss_mb:.0f} MB",
        file=sys.stderr,
        flush=True,
    )


_PLATFORM = r"""
import datetime as dt, json, resource, sys, time
from pathlib import Path
from analytics_platform.mixpanel.store import ingest_ranges
from analytics_platform.resources.mixpanel import MixpanelResource
from analytics_platform.resources.warehouse import DuckDBWarehouse
from benchmarks.harness import PeakMemory

url, day, event, workdir = sys.argv[1], dt.date.fromisoformat(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
warehouse = DuckDBWarehouse(path=str(workdir / "platform.duckdb"))
mixpanel = MixpanelResource(export_url=url, api_url=url, timeout_seconds=600)
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
cpu0 = cpu()
with PeakMemory() as mem:
    t0 = time.perf_counter()
    result = ingest_ranges(warehouse=warehouse, mixpanel=mixpanel, dataset="mixpanel_data",
                           table="mixpanel_events", ranges=[(day, day)], events=[event], workdir=workdir / "tmp")
    wall = time.perf_counter() - t0
cpu_s = cpu() - cpu0
rows = warehouse.query("SELECT COUNT(*) AS n FROM `mixpanel_data.mixpanel_events`")["n"].iloc[0]
assert int(rows) == result.rows_inserted, (rows, result.rows_inserted)
print(json.dumps({"wall": wall, "cpu": cpu_s, "peak_growth_mb": mem.growth_mb, "rows_inserted": result.rows_inserted,
                  "duplicates_collapsed": result.duplicates_collapsed, "export_bytes": result.export_bytes,
                  "export_requests": result.export_requests}))
"""


def _platform(url: str, scale: int, workdir: Path, stub: "_Stub", variant: str = "platform",
              code_root: Optional[Path] = None) -> Measurement:
    """``ingest_ranges`` in a child process whose imports come from ``code_root`` (this
    tree by default; another tree for a before/after comparison in the same run).  The
    child times itself after its imports; its CPU is its own (DuckDB's threads included)."""
    root = Path(code_root or Path(__file__).resolve().parents[1])
    here = workdir / variant
    here.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(root)}
    load0 = _load()
    stub0 = stub.cpu_seconds()
    m = Measurement(BENCH, variant, scale, "events", 0.0, 0.0)
    out = subprocess.run(
        [sys.executable, "-c", _PLATFORM, stub.url, DAY.isoformat(), EVENT, str(here)],
        cwd=root, env=env, check=True, capture_output=True, text=True,
    )
    child = json.loads(out.stdout.strip().splitlines()[-1])
    m.wall_seconds = child["wall"]
    m.peak_rss_mb = round(child["peak_growth_mb"], 1)
    cpu = child["cpu"]
    m.extra.update(
        code=str(root),
        cpu_seconds_self=round(cpu, 1),
        events_per_cpu_second=round(scale / cpu) if cpu > 0 else None,
        stub_cpu_seconds=round(stub.cpu_seconds() - stub0, 1),
        rows_inserted=child["rows_inserted"],
        duplicates_collapsed=child["duplicates_collapsed"],
        export_bytes=child["export_bytes"],
        export_requests=child["export_requests"],
        load_average_start=load0,
        load_average_end=_load(),
    )
    shutil.rmtree(here, ignore_errors=True)
    return m


def _in_process(variant: str, scale: int, stub: Optional["_Stub"], work) -> Measurement:
    """Time ``work()`` in this process: wall (``measure``), this process's CPU, the stub's
    CPU (when it serves the variant) and the load average around it; ``work`` returns
    extra figures for the measurement (or None)."""
    load0 = _load()
    stub0 = stub.cpu_seconds() if stub is not None else 0.0
    cpu0 = _cpu()
    with measure(BENCH, variant, scale, "events") as m:
        extra = work() or {}
    cpu = _cpu() - cpu0
    m.extra.update(
        cpu_seconds_self=round(cpu, 1),
        events_per_cpu_second=round(scale / cpu) if cpu > 0 else None,
        load_average_start=load0,
        load_average_end=_load(),
        **extra,
    )
    if stub is not None:
        m.extra["stub_cpu_seconds"] = round(stub.cpu_seconds() - stub0, 1)
    return m


def _batched(url: str, scale: int, workdir: Path, stub: "_Stub", variant: str) -> Measurement:
    """``json_batched`` / ``orjson_arrow``: see benchmarks/mixpanel_baselines.py."""
    from analytics_platform.resources.warehouse import DuckDBWarehouse
    from benchmarks import mixpanel_baselines as B

    loads, dumps = B.json_codec() if variant == "json_batched" else B.orjson_codec()
    warehouse = DuckDBWarehouse(path=str(workdir / f"{variant}.duckdb"))
    m = _in_process(variant, scale, stub, lambda: B.batched_load(
        url=url, warehouse=warehouse, dataset="mixpanel_data", table="mixpanel_events", day=DAY,
        events=[EVENT], loads=loads, dumps=dumps, inserted_at=dt.datetime.now(dt.timezone.utc),
    ))
    (workdir / f"{variant}.duckdb").unlink(missing_ok=True)
    return m


def _parse_only(export: Path, scale: int) -> Measurement:
    from benchmarks import mixpanel_baselines as B

    def work() -> None:
        lines = B.parse_only(export)
        assert lines == scale, (lines, scale)

    return _in_process("parse_only", scale, None, work)


def _download_only(url: str, scale: int, workdir: Path, stub: "_Stub") -> Measurement:
    """The platform's HTTP client alone (``export_to_file``: the gzip stream received,
    decompressed, checked and written), nothing parsed: the transfer's share of any end
    to end run on this machine (the stub's gzip runs on the same cores)."""
    from analytics_platform.resources.mixpanel import MixpanelResource

    client = MixpanelResource(export_url=url, api_url=url, timeout_seconds=600)
    dest = workdir / "download_only.jsonl"

    def work() -> None:
        stats = client.export_to_file(DAY, DAY, [EVENT], dest=dest)
        assert stats.lines == scale, (stats.lines, scale)

    m = _in_process("download_only", scale, stub, work)
    dest.unlink(missing_ok=True)
    return m


def _baseline(url: str, scale: int, run_scale: int, workdir: Path) -> Measurement:
    """requests + json.loads per line + one INSERT per row (the old collector's shape)."""
    import duckdb
    import requests

    con = duckdb.connect(str(workdir / "baseline.duckdb"))
    con.execute("SET TimeZone='UTC'")
    con.execute(
        "CREATE TABLE events (event_id VARCHAR, event_name VARCHAR, distinct_id VARCHAR, "
        "event_timestamp TIMESTAMPTZ, inserted_at TIMESTAMPTZ, properties JSON)"
    )
    load0 = _load()
    cpu0 = _cpu()
    with measure(BENCH, "baseline", scale, "events") as m:
        started = time.perf_counter()
        seen: set[str] = set()
        done = 0
        with requests.get(
            f"{url}/api/2.0/export",
            params={"from_date": DAY.isoformat(), "to_date": DAY.isoformat(), "event": json.dumps([EVENT])},
            headers={"Accept-Encoding": "gzip"}, stream=True, timeout=600,
        ) as response:
            response.raise_for_status()
            for raw in response.iter_lines():
                if not raw:
                    continue
                record = json.loads(raw)
                props = record["properties"]
                event_id = props.get("$insert_id")
                if event_id in seen:
                    continue
                seen.add(event_id)
                t = props["time"]
                seconds = t / 1000 if t > 1e11 else t
                con.execute(
                    "INSERT INTO events VALUES (?, ?, ?, to_timestamp(?), now(), ?)",
                    [event_id, record["event"], props.get("distinct_id"), seconds, json.dumps(props)],
                )
                done += 1
                if done >= run_scale:
                    break
        elapsed = time.perf_counter() - started
    con.close()
    factor = scale / max(done, 1)
    m.wall_seconds = elapsed * factor  # after the block: measure() set the measured time
    m.extra.update(
        measured_events=done,
        measured_seconds=round(elapsed, 2),
        extrapolated=f"linear x{factor:.1f} from {done:,} events" if factor > 1 else "no",
        cpu_seconds_self=round((_cpu() - cpu0) * factor, 1),
        events_per_cpu_second=round(done / max(_cpu() - cpu0, 1e-9)),
        load_average_start=load0,
        load_average_end=_load(),
    )
    return m


VARIANTS = ("platform", "baseline", "json_batched", "orjson_arrow", "parse_only", "download_only")


def _ratios(ran: list[Measurement], round_no: int) -> None:
    """Each variant against the same round's parse-only and orjson+Arrow runs, by wall
    rate and by CPU rate (events per CPU-second: what the load does not distort)."""
    ref = {m.variant: m for m in ran}
    for m in ran:
        m.extra["round"] = round_no
        for name in ("parse_only", "orjson_arrow"):
            r = ref.get(name)
            if r is None or r is m:
                continue
            m.extra[f"vs_{name}"] = round(m.throughput / r.throughput, 2)
            if m.extra.get("events_per_cpu_second") and r.extra.get("events_per_cpu_second"):
                m.extra[f"vs_{name}_cpu"] = round(m.extra["events_per_cpu_second"] / r.extra["events_per_cpu_second"], 2)
        vs = {k: v for k, v in m.extra.items() if k.startswith("vs_")}
        if vs:
            print(f"[{BENCH}] round {round_no} {m.variant} {m.scale:,}: {vs}", file=sys.stderr, flush=True)


def run(scale: int, workdir: Path, baseline_scale: Optional[int] = None) -> list[Measurement]:
    """Every variant on the same served bytes, in one run.  Environment knobs (optional):
    ``MIXPANEL_BENCH_VARIANTS`` (comma list, default all), ``MIXPANEL_BENCH_BEFORE`` (a
    source tree: its platform runs as ``platform_before``, interleaved with ``platform``),
    ``MIXPANEL_BENCH_REPEATS`` (rounds, default 1: each round runs platform_before,
    platform, orjson_arrow, parse_only and download_only once; json_batched and the old collector run in
    the first round only).  Ratios are taken within a round."""
    workdir = Path(workdir)
    export = workdir / "export.jsonl"
    size = write_export(export, scale)
    wanted = [v.strip() for v in os.environ.get("MIXPANEL_BENCH_VARIANTS", ",".join(VARIANTS)).split(",") if v.strip()]
    before = os.environ.get("MIXPANEL_BENCH_BEFORE")
    repeats = int(os.environ.get("MIXPANEL_BENCH_REPEATS", "1"))
    stub = _Stub(export, DAY)
    results: list[Measurement] = []

    def done(m: Measurement) -> None:
        m.extra["file_mb"] = round(size / 2**20)
        results.append(m)
        _summary(m)

    try:
        for round_no in range(1, repeats + 1):
            # one round: every variant once, close together (the load moves); the slow
            # ones (json_batched, the old collector) in the first round only
            ran: list[Measurement] = []
            if before:
                ran.append(_platform(stub.url, scale, workdir, stub, "platform_before", Path(before)))
                done(ran[-1])
            if "platform" in wanted:
                ran.append(_platform(stub.url, scale, workdir, stub))
                done(ran[-1])
            for variant in ("orjson_arrow", "json_batched"):
                if variant in wanted and (variant == "orjson_arrow" or round_no == 1):
                    ran.append(_batched(stub.url, scale, workdir, stub, variant))
                    done(ran[-1])
            if "parse_only" in wanted:
                ran.append(_parse_only(export, scale))
                done(ran[-1])
            if "download_only" in wanted:
                ran.append(_download_only(stub.url, scale, workdir, stub))
                done(ran[-1])
            if "baseline" in wanted and round_no == 1:
                run_scale = min(scale, baseline_scale or BASELINE_MAX)
                ran.append(_baseline(stub.url, scale, run_scale, workdir))
                done(ran[-1])
            _ratios(ran, round_no)
    finally:
        stub.close()
    return results
