"""Demo data of the engagement domain: Firestore usage events and the goal tables.

``seed`` writes the event documents through the Firestore resource (the local JSON-lines
export ``$ANALYTICS_DATA_DIR/firestore/events.jsonl`` on the local default, or the emulator
when ``FIRESTORE_EMULATOR_HOST`` is set) and the goal tables into the application database
(the embedded PostgreSQL on the local default). The named users below make every signal and
every milestone true for someone and false for someone else; ~40 background users add
volume; three malformed documents show the quarantine.

Re-seeding is idempotent: the export file is rewritten with the same documents, goal rows
use fixed ids (inserted if absent) and only the demo users' ``user_goals`` rows (ids
starting with ``demo-``) are replaced.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from analytics_platform.demo import DemoContext, DemoStep
from analytics_platform.engagement import store
from analytics_platform.resources.firestore import FirestoreService
from analytics_platform.resources.local.firestore_export import write_local_export

WEEK = dt.timedelta(days=7)
HOUR = dt.timedelta(hours=1)

SUB_CATEGORIES = {9101: "Fitness", 9102: "Sleep", 9103: "Personal finance", 9104: "Language learning"}
GOALS = {9201: ("Run a 5k", 9101), 9202: ("Sleep 8 hours", 9102), 9203: ("Build savings", 9103), 9204: ("Speak Spanish", 9104)}
APPS = {  # id -> (package_name, name, sub-categories)
    9301: ("com.demo.fitness", "Demo Fitness", (9101,)),
    9302: ("com.demo.sleep", "Demo Sleep", (9102,)),
    9303: ("com.demo.budget", "Demo Budget", (9103,)),
    9304: ("com.demo.lingo", "Demo Lingo", (9104,)),
    9305: ("com.demo.wellbeing", "Demo Wellbeing", (9101, 9102)),
}
NON_SERVICE_APP = "com.demo.game"  # not in `apps`
FIT, SLEEP, BUDGET, LINGO, WELLBEING = (APPS[i][0] for i in (9301, 9302, 9303, 9304, 9305))

# Named users: (goals as [(goal_id, tier)], description). Their events are built in _named_events.
NAMED_USERS = {
    "demo-retained": ([(9201, 1), (9202, 2)], "9 active weeks on the tier-1 app, long sessions: everything true for both tiers"),
    "demo-retention-dropoff": ([(9201, 1), (9202, 2)], "wellbeing app (both goals) in weeks 1-9, nothing this week: both drop-offs, both tiers"),
    "demo-engaged-by-sessions": ([(9201, 1), (9203, 2)], "3 active weeks, 4 short sessions this week: registered by sessions"),
    "demo-engagement-dropoff": ([(9201, 1)], "active weeks 1-3, nothing this week: engagement drop-off (tier 1)"),
    "demo-login-only": ([(9204, 1)], "one 90-second event five weeks ago: login, nothing else"),
    "demo-three-sessions": ([(9204, 2)], "3 short sessions this week (not 4): not registered"),
    "demo-unaligned": ([(9201, 1)], "goal: fitness; uses only the budget app and a game: no aligned activity"),
    "demo-no-goals": ([], "lots of activity but no goals: no goal setting, no milestones"),
    "demo-goals-no-events": ([(9203, 1), (9204, 2)], "goals but no events"),
}
BACKGROUND_USERS = 40


def _doc(user: str, event_id: str, app: str, at: dt.datetime, fg, session: str) -> dict:
    return {
        "path": f"app_usage_events/{user}/events/{event_id}",
        "fields": {"app_id": app, "foreground_time_ms": fg, "session_id": session, "timestamp": at},
    }


def _named_events(T: dt.datetime) -> list[dict]:
    docs: list[dict] = []

    def weekly(user, app, weeks, fg, prefix="w"):
        for k in weeks:
            docs.append(_doc(user, f"{prefix}{k:02d}", app, T - k * WEEK - 5 * HOUR, fg, f"{user}-{prefix}{k}"))

    weekly("demo-retained", FIT, range(9), 300_000)
    docs.append(_doc("demo-retained", "sleep0", SLEEP, T - 2 * HOUR, 30_000, "demo-retained-sleep"))
    weekly("demo-retention-dropoff", WELLBEING, range(1, 10), 45_000)
    weekly("demo-engaged-by-sessions", FIT, range(1, 3), 20_000)
    for i in range(4):
        docs.append(_doc("demo-engaged-by-sessions", f"s{i}", FIT, T - (i + 1) * 6 * HOUR, 15_000, f"sess-{i}"))
    docs.append(_doc("demo-engaged-by-sessions", "budget", BUDGET, T - 3 * HOUR, 30_000, "budget"))
    weekly("demo-engagement-dropoff", WELLBEING, range(1, 4), 120_000)
    docs.append(_doc("demo-login-only", "once", LINGO, T - 5 * WEEK, 90_000, "once"))
    for i in range(3):
        docs.append(_doc("demo-three-sessions", f"s{i}", LINGO, T - (i + 1) * 4 * HOUR, 5_000, f"three-{i}"))
    weekly("demo-unaligned", BUDGET, range(10), 400_000)
    docs.append(_doc("demo-unaligned", "game", NON_SERVICE_APP, T - HOUR, 600_000, "game"))
    weekly("demo-no-goals", FIT, range(10), 400_000)
    # an event exactly at T belongs to the next day: not counted today
    docs.append(_doc("demo-login-only", "at-T", LINGO, T, 500_000, "tomorrow"))
    return docs


def _malformed(T: dt.datetime) -> list[dict]:
    return [
        _doc("demo-retained", "bad-fg", FIT, T - HOUR, "300000", "x"),  # ill-typed: a string
        {"path": "app_usage_events/demo-retained/events/bad-session",
         "fields": {"app_id": FIT, "foreground_time_ms": 1000, "timestamp": T - HOUR}},  # missing session_id
        _doc("demo-no-goals", "bad-app", 42, T - HOUR, 1000, "y"),  # app_id is a number
    ]


def demo_documents(ctx: DemoContext) -> list[dict]:
    """Every demo event document (deterministic for ``ctx``)."""
    T = ctx.as_of
    rng = ctx.rng("engagement")
    docs = _named_events(T) + _malformed(T)
    packages = [p for p, _, _ in APPS.values()] + [NON_SERVICE_APP]
    for u in range(BACKGROUND_USERS):
        user = f"demo-user-{u:03d}"
        for e in range(rng.randrange(0, 40)):
            at = T - dt.timedelta(seconds=rng.randrange(60, 11 * 7 * 86_400))
            fg = rng.choice([0, 15_000, 45_000, 70_000, 180_000, 260_000])
            docs.append(_doc(user, f"e{e:03d}", rng.choice(packages), at, fg, f"{user}-s{rng.randrange(8)}"))
    return docs


def demo_user_goals(ctx: DemoContext) -> list[tuple[str, int, int]]:
    rng = ctx.rng("engagement-goals")
    rows = [(user, goal, tier) for user, (goals, _) in NAMED_USERS.items() for goal, tier in goals]
    for u in range(BACKGROUND_USERS):
        for goal in rng.sample(sorted(GOALS), rng.choice([0, 1, 1, 2])):
            rows.append((f"demo-user-{u:03d}", goal, rng.choice([1, 2])))
    return rows


def seed(ctx: DemoContext) -> None:
    firestore: FirestoreService = ctx.resources["firestore"]
    documents = demo_documents(ctx)
    if firestore.mode == "local_export":
        write_local_export(firestore.local_export_path, documents)  # rewrite: no duplicates
    else:
        firestore.write_documents(documents)

    app_db = ctx.resources["app_db"]
    with app_db.begin() as conn:
        store.ensure_goal_tables(conn)
        conn.execute(
            sa.text("INSERT INTO goal_sub_categories (id, name) VALUES (:id, :name) ON CONFLICT (id) DO NOTHING"),
            [{"id": i, "name": n} for i, n in SUB_CATEGORIES.items()],
        )
        conn.execute(
            sa.text("INSERT INTO goals (id, name, sub_category_id) VALUES (:id, :name, :sub) ON CONFLICT (id) DO NOTHING"),
            [{"id": i, "name": n, "sub": s} for i, (n, s) in GOALS.items()],
        )
        conn.execute(
            sa.text("INSERT INTO apps (id, package_name, name) VALUES (:id, :p, :n) ON CONFLICT DO NOTHING"),
            [{"id": i, "p": p, "n": n} for i, (p, n, _) in APPS.items()],
        )
        conn.execute(
            sa.text(
                "INSERT INTO app_goal_sub_categories (app_id, sub_category_id) SELECT :a, :s "
                "WHERE NOT EXISTS (SELECT 1 FROM app_goal_sub_categories WHERE app_id = :a AND sub_category_id = :s)"
            ),
            [{"a": i, "s": s} for i, (_, _, subs) in APPS.items() for s in subs],
        )
        conn.execute(sa.text("DELETE FROM user_goals WHERE user_id LIKE 'demo-%'"))
        conn.execute(
            sa.text("INSERT INTO user_goals (user_id, goal_id, tier) VALUES (:u, :g, :t)"),
            [{"u": u, "g": g, "t": t} for u, g, t in demo_user_goals(ctx)],
        )


def steps(ctx: DemoContext) -> list[DemoStep]:
    day = ctx.demo_date.isoformat()
    return [
        DemoStep(
            selection=["engagement/firestore_app_usage_events"],
            description="extract the Firestore usage events into the warehouse mirror (incremental; 3 malformed documents are quarantined)",
            planted=("3 Firestore documents with a missing or ill-typed field are quarantined, the rest loads",),
        ),
        DemoStep(
            selection=["app_db/user_engagement_signals", "app_db/user_milestones"],
            partition_key=day,
            description=f"engagement signals and goal milestones as of the end of {day}",
            planted=(
                "the demo's days are in 2024: the checks freshness fail as a WARN, never fresh on this instance (no alert)",
            ),
        ),
    ]
