"""The mixpanel demo runs on the local default and alerts on its spike."""

from __future__ import annotations

import json

from analytics_platform.demo import DemoContext
from analytics_platform.demo import mixpanel as demo
from analytics_platform.resources import build_resources
from analytics_platform.settings import get_settings


def test_demo_is_deterministic_and_keeps_other_domains_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(tmp_path / "data"))
    settings = get_settings()
    ctx = DemoContext(settings=settings, resources={})
    path = demo.export_path(ctx, ctx.demo_date)
    path.parent.mkdir(parents=True)
    path.write_text('{"event":"impression_privacy","properties":{"time":1717574400,"$insert_id":"demo-cohorts-x"}}\n')
    demo.seed(ctx)
    first = path.read_text()
    demo.seed(ctx)
    assert path.read_text() == first  # re-seeding replaces only its own lines
    assert first.count("demo-cohorts-x") == 1
    assert all((tmp_path / "data" / "mixpanel_export" / f"{d}.jsonl").exists() for d in demo.demo_days(ctx))


def test_demo_steps_ingest_and_alert_on_the_spike(tmp_path, monkeypatch):
    from analytics_platform.demo.runner import materialize_step
    import dagster as dg

    from analytics_platform.mixpanel.definitions import defs as mixpanel_defs

    monkeypatch.delenv("EVENTS_CONFIG", raising=False)  # the repository's config/events_config.json
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(tmp_path / "data"))
    settings = get_settings()
    resources = build_resources(settings)
    ctx = DemoContext(settings=settings, resources=resources)
    demo.seed(ctx)
    defs = dg.Definitions.merge(mixpanel_defs, dg.Definitions(resources=resources))
    with dg.instance_for_test() as instance:
        for step in demo.steps(ctx):
            assert materialize_step(defs, step, instance).success
    outbox = [json.loads(l) for l in (tmp_path / "data" / "outbox" / "slack_alerts.jsonl").read_text().splitlines()]
    assert [(m["channel"], "14:07" in m["text"] or "14:20" in m["text"]) for m in outbox] == [
        ("#alerts-errors", True),
        ("#alerts-errors", True),
    ]
    wh = resources["warehouse"]
    rejected = wh.query("SELECT COUNT(*) AS n FROM `mixpanel_data.mixpanel_events_rejected`")["n"].iloc[0]
    assert rejected == len(demo.MALFORMED)
    statuses = wh.query("SELECT alert_status, COUNT(*) AS n FROM `mixpanel_data.event_anomalies` GROUP BY 1 ORDER BY 1")
    assert dict(zip(statuses["alert_status"], statuses["n"])) == {"sent": 2, "suppressed": 1}
