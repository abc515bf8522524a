"""Demo data of the mixpanel domain: three days of Mixpanel export lines with a spike.

``seed`` writes realistic export lines (JSON lines as the Raw Event Export API returns
them) into the local export files the Mixpanel resource reads when no credentials are set:
``$ANALYTICS_DATA_DIR/mixpanel_export/YYYY-MM-DD.jsonl`` for the demo day and the two days
before.  They include:

* ordinary traffic of the configured events (``impression_game_started``, some
  ``impression_payment_failed``, a trickle of ``impression_error_null_pointer_detected``);
* a spike of ``impression_error_null_pointer_detected`` on the demo day at 14:07 UTC
  (14 events in one minute; the default config alerts above 5 per minute), another at
  14:09 (within the 5-minute cooldown: suppressed) and one at 14:20 (alerted again);
* times in seconds and, for part of the Android traffic, in milliseconds; a duplicated
  ``$insert_id``; an event type that is not collected; and four malformed lines.

The other domains' lines in the same files are kept (the cohorts demo adds its own to the
demo day); re-seeding replaces only this module's lines (they all contain
``demo-mixpanel-``), so nothing accumulates.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from analytics_platform.common import day_start
from analytics_platform.demo import DemoContext, DemoStep

MARK = "demo-mixpanel-"
NPE = "impression_error_null_pointer_detected"
SPIKES = ((14, 7, 14), (14, 9, 9), (14, 20, 8))  # (hour, minute, events in that minute)
DAYS_BEFORE = 2
EVENTS_PER_DAY = 1500

MALFORMED = (
    '{"event":"impression_game_started","properties":{"distinct_id":"' + MARK + 'cut","time":17175',  # truncated
    "<html><body>502 Bad Gateway</body></html> " + MARK + "html",
    '{"event":"impression_game_started","properties":{"distinct_id":"' + MARK + 'no-time"}}',
    '{"properties":{"time":1717600000,"distinct_id":"' + MARK + 'no-event"}}',
)


def export_path(ctx: DemoContext, day: dt.date) -> Path:
    return ctx.data_dir / "mixpanel_export" / f"{day.isoformat()}.jsonl"


def demo_days(ctx: DemoContext) -> list[dt.date]:
    return [ctx.demo_date - dt.timedelta(days=n) for n in range(DAYS_BEFORE, -1, -1)]


def _record(name: str, at: dt.datetime, user: int, insert_id: str, rng, *, ms: bool = False, **extra) -> dict:
    android = user % 3 != 0
    seconds = at.timestamp()
    props = {
        "time": int(round(seconds * 1000)) if ms else int(seconds),
        "distinct_id": f"{MARK}user-{user:04d}",
        "$insert_id": MARK + insert_id,
        "mp_processing_time_ms": int(seconds * 1000) + rng.randrange(200, 90_000),
        "$device_id": f"{MARK}device-{user:04d}",
        "$os": "Android" if android else "iOS",
        "mp_os": "Android" if android else "iOS",
        "$app_version_string": rng.choice(["5.12.0", "5.12.1", "5.13.0"]),
        "mp_country_code": rng.choice(["IL", "US", "DE", "BR", "IN"]),
        "$model": rng.choice(["SM-G991B", "Pixel 7", "iPhone14,5", "iPhone15,2"]),
        "mp_lib": "android" if android else "swift",
        **extra,
    }
    return {"event": name, "properties": props}


def day_records(ctx: DemoContext, day: dt.date) -> list[dict]:
    """This module's export records for ``day`` (deterministic)."""
    rng = ctx.rng(f"mixpanel:{day.isoformat()}")
    start = day_start(day)
    records: list[dict] = []
    for i in range(EVENTS_PER_DAY):
        at = start + dt.timedelta(seconds=rng.randrange(86_400), milliseconds=rng.randrange(1000))
        user = rng.randrange(400)
        records.append(
            _record("impression_game_started", at, user, f"{day}-play-{i}", rng, ms=user % 3 == 1,
                    level=rng.randrange(1, 300), coins=rng.randrange(0, 50_000), session_id=f"s-{rng.randrange(10**9)}")
        )
    for i in range(60):  # a few payment failures, well under 20 per 5 minutes
        at = start + dt.timedelta(seconds=rng.randrange(86_400))
        records.append(_record("impression_payment_failed", at, rng.randrange(400), f"{day}-pay-{i}", rng,
                               sku=rng.choice(["coins_100", "coins_500", "vip_month"]), error_code=rng.choice([3, 7, 12])))
    for i in range(40):  # background errors: about one every 36 minutes
        at = start + dt.timedelta(seconds=rng.randrange(86_400))
        records.append(_record(NPE, at, rng.randrange(400), f"{day}-npe-{i}", rng, screen="board", build="5.12.1"))
    for i in range(30):  # not in the events configuration: never collected
        at = start + dt.timedelta(seconds=rng.randrange(86_400))
        records.append(_record("impression_shop_opened", at, rng.randrange(400), f"{day}-shop-{i}", rng))
    if day == ctx.demo_date:
        for hour, minute, count in SPIKES:
            for k in range(count):
                at = start + dt.timedelta(hours=hour, minutes=minute, seconds=k * 59 // count, milliseconds=k * 37)
                records.append(
                    _record(NPE, at, 1000 + k, f"{day}-spike-{hour:02d}{minute:02d}-{k}", rng,
                            ms=k % 2 == 0, screen="board", build="5.13.0",
                            stack="java.lang.NullPointerException at com.game.Board.render(Board.kt:212)")
                )
        # Mixpanel does not deduplicate: the same $insert_id comes twice
        records.append(dict(records[0]))
    records.sort(key=lambda r: (r["properties"]["time"] if r["properties"]["time"] < 10**11 else r["properties"]["time"] // 1000,
                                r["properties"]["$insert_id"]))
    return records


def seed(ctx: DemoContext) -> None:
    """Write this domain's lines into the local export files, keeping other domains' lines."""
    for day in demo_days(ctx):
        path = export_path(ctx, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if path.exists():
            kept = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip() and MARK not in l]
        ours = [json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in day_records(ctx, day)]
        if day == ctx.demo_date:
            # malformed lines in the middle of the day's file
            middle = len(ours) // 2
            ours[middle:middle] = list(MALFORMED)
        tmp = path.with_name(path.name + ".mixpanel.tmp")
        tmp.write_text("\n".join(kept + ours) + "\n", encoding="utf-8")
        tmp.replace(path)


def steps(ctx: DemoContext) -> list[DemoStep]:
    days = demo_days(ctx)
    as_of = ctx.as_of.isoformat().replace("+00:00", "Z")
    return [
        DemoStep(
            selection=["mixpanel_data/mixpanel_events"],
            partition_range=(days[0].isoformat(), days[-1].isoformat()),
            description=f"ingest {days[0]}..{days[-1]} in one run (one export query)",
            planted=(
                "malformed export lines (not JSON, no event, no time) are quarantined in mixpanel_data.mixpanel_events_rejected",
                "the demo's days are in 2024: the check freshness fails as a WARN, never fresh on this instance (no alert)",
            ),
        ),
        DemoStep(
            selection=["mixpanel_data/event_anomalies"],
            run_config={
                "ops": {
                    "mixpanel_data__event_anomalies": {
                        "config": {"as_of": as_of, "lookback_minutes": 24 * 60, "cooldown_minutes": 5}
                    }
                }
            },
            description=f"event spikes of the demo day (as_of {as_of}, 24 h lookback): alerts to Slack or the outbox",
        ),
    ]
