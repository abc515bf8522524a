"""Demo data of the cohorts domain: temp-user pairs and near misses on the demo day.

The events travel the way production events do: ``seed`` writes them as Mixpanel export
lines into the local export file of the demo day
(``$ANALYTICS_DATA_DIR/mixpanel_export/2024-06-05.jsonl``, the file the Mixpanel resource
reads when no credentials are set), next to the Mixpanel domain's own demo lines; the
first step ingests that day into ``mixpanel_data.mixpanel_events`` (so ``--domain cohorts``
works alone; in the full demo it re-loads the same partition, which is idempotent); then
the cohort job runs with ``as_of`` = the end of the demo day.

Re-seeding replaces only this module's lines (their ``$insert_id`` starts with
``demo-cohorts-``), so the file never accumulates duplicates.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from analytics_platform.cohorts.schedules import daily_run_config
from analytics_platform.common import day_start
from analytics_platform.cohorts.rules import PRIVACY_EVENT, RESTORE_EVENT, iso_utc
from analytics_platform.demo import DemoContext, DemoStep

INSERT_ID_PREFIX = "demo-cohorts-"
ACTIVITY_EVENT = "impression_game_started"  # an enabled event in config/events_config.json
TEMP_USERS = 24  # regular temp-user pairs
ACTIVE_TEMP_USERS = 3  # of which this many keep playing under the temporary id

# distinct_id -> why it is (not) a temp user; the demo's expected outcome.
EDGE_CASES = {
    "demo-temp-gap-120s": (True, "restore exactly 120 s after the privacy screen"),
    "demo-temp-os-fallback": (True, "no mp_os; $os = Android"),
    "demo-temp-device-id-fallback": (True, "no $device_id; device_id property"),
    "demo-miss-gap-121s": (False, "restore 121 s after the privacy screen"),
    "demo-miss-ios": (False, "iOS"),
    "demo-miss-other-device": (False, "restore on another device"),
    "demo-miss-restore-before": (False, "restore 30 s before the privacy screen"),
    "demo-miss-empty-device": (False, "empty device id"),
}


def export_path(ctx: DemoContext) -> Path:
    return ctx.data_dir / "mixpanel_export" / f"{ctx.demo_date.isoformat()}.jsonl"


def _line(name: str, distinct_id: str, at: dt.datetime, insert_id: str, **props) -> dict:
    properties = {
        "time": int(at.timestamp()),
        "distinct_id": distinct_id,
        "$insert_id": INSERT_ID_PREFIX + insert_id,
        "mp_processing_time_ms": int(at.timestamp() * 1000) + 1500,
        **props,
    }
    return {"event": name, "properties": properties}


def demo_events(ctx: DemoContext) -> list[dict]:
    """The cohort demo's Mixpanel export records (deterministic for ``ctx``)."""
    rng = ctx.rng("cohorts")
    day = day_start(ctx.demo_date)
    events: list[dict] = []

    def pair(user: str, at: dt.datetime, gap_s: float, *, privacy_props: dict, restore_props: dict) -> None:
        events.append(_line(PRIVACY_EVENT, user, at, f"{user}-privacy", **privacy_props))
        restored_as = "real-" + user.removeprefix("demo-")
        events.append(
            _line(RESTORE_EVENT, restored_as, at + dt.timedelta(seconds=gap_s), f"{user}-restore", **restore_props)
        )

    def android(device: str) -> dict:
        return {"$device_id": device, "mp_os": "Android", "$os": "Android"}

    # regular temp users: fresh install, privacy screen, restore within two minutes
    for i in range(TEMP_USERS):
        user = f"demo-temp-{i:03d}"
        device = f"demo-device-{rng.randrange(16**8):08x}"
        at = day + dt.timedelta(seconds=rng.randrange(60, 20 * 3600))
        pair(user, at, rng.randrange(0, 121), privacy_props=android(device), restore_props=android(device))
        if i < ACTIVE_TEMP_USERS:  # keeps playing under the temporary identity
            for k in range(1 + i):
                later = at + dt.timedelta(hours=1 + k, minutes=rng.randrange(60))
                events.append(_line(ACTIVITY_EVENT, user, later, f"{user}-play-{k}", **android(device)))

    # boundaries and near misses (named after what they show)
    base = day + dt.timedelta(hours=21)
    step = dt.timedelta(minutes=5)
    pair("demo-temp-gap-120s", base, 120, privacy_props=android("edge-1"), restore_props=android("edge-1"))
    pair(
        "demo-temp-os-fallback",
        base + step,
        10,
        privacy_props={"$device_id": "edge-2", "$os": "Android"},
        restore_props=android("edge-2"),
    )
    pair(
        "demo-temp-device-id-fallback",
        base + 2 * step,
        15,
        privacy_props={"device_id": "edge-3", "mp_os": "Android"},
        restore_props={"device_id": "edge-3", "mp_os": "Android"},
    )
    pair("demo-miss-gap-121s", base + 3 * step, 121, privacy_props=android("miss-1"), restore_props=android("miss-1"))
    pair(
        "demo-miss-ios",
        base + 4 * step,
        20,
        privacy_props={"$device_id": "miss-2", "mp_os": "iOS", "$os": "iOS"},
        restore_props={"$device_id": "miss-2", "mp_os": "iOS"},
    )
    pair("demo-miss-other-device", base + 5 * step, 20, privacy_props=android("miss-3a"), restore_props=android("miss-3b"))
    pair("demo-miss-restore-before", base + 6 * step, -30, privacy_props=android("miss-4"), restore_props=android("miss-4"))
    pair(
        "demo-miss-empty-device",
        base + 7 * step,
        20,
        privacy_props={"$device_id": "", "mp_os": "Android"},
        restore_props={"$device_id": "", "mp_os": "Android"},
    )

    # ordinary traffic: users who see the privacy screen and never restore
    for i in range(40):
        at = day + dt.timedelta(seconds=rng.randrange(0, 86_000))
        device = f"demo-device-{rng.randrange(16**8):08x}"
        events.append(_line(PRIVACY_EVENT, f"demo-user-{i:03d}", at, f"user-{i}-privacy", **android(device)))
    events.sort(key=lambda e: (e["properties"]["time"], e["properties"]["$insert_id"]))
    return events


def expected_temp_users() -> set[str]:
    return {f"demo-temp-{i:03d}" for i in range(TEMP_USERS)} | {u for u, (inside, _) in EDGE_CASES.items() if inside}


def seed(ctx: DemoContext) -> None:
    """Add this domain's lines to the demo day's local Mixpanel export file (idempotent)."""
    path = export_path(ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if f'"$insert_id": "{INSERT_ID_PREFIX}' in line or f'"$insert_id":"{INSERT_ID_PREFIX}' in line:
                continue
            if line.strip():
                kept.append(line)
    ours = [json.dumps(e, separators=(",", ":")) for e in demo_events(ctx)]
    tmp = path.with_name(path.name + ".cohorts.tmp")
    tmp.write_text("\n".join(kept + ours) + "\n", encoding="utf-8")
    tmp.replace(path)


def steps(ctx: DemoContext) -> list[DemoStep]:
    day = ctx.demo_date.isoformat()
    return [
        DemoStep(
            selection=["mixpanel_data/mixpanel_events"],
            partition_key=day,
            description=f"ingest {day} (includes the cohort demo's temp-user pairs and near misses)",
            planted=(
                "malformed export lines (not JSON, no event, no time) are quarantined in mixpanel_data.mixpanel_events_rejected",
                "the demo's days are in 2024: the check freshness fails as a WARN, never fresh on this instance (no alert)",
            ),
        ),
        DemoStep(
            selection=["peerplay/state_loss_temp_users", "mixpanel/state_loss_temp_user_cohort"],
            run_config=daily_run_config(iso_utc(ctx.as_of)),
            description=(
                f"temp users as of {iso_utc(ctx.as_of)}: detection, active-yesterday check, "
                "Mixpanel marker (outbox without MIXPANEL_PROJECT_TOKEN)"
            ),
            planted=("three temp users were active yesterday: the WARN check active_yesterday fails on purpose",),
        ),
    ]
