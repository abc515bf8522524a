"""A per-user, event-by-event implementation of specs/signals.md: the old Lambda's shape.

It is written straight from the definitions, independently of the set-based SQL and the
vectorised rules, and serves two purposes: the baseline of the ``signals`` benchmark, and
an oracle that the tests compare the platform's results against on random data. It is not
used by the assets.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Mapping

WEEK = dt.timedelta(days=7)


@dataclass(frozen=True)
class Event:
    app_id: str
    foreground_time_ms: int
    session_id: str
    timestamp: dt.datetime  # aware UTC


def week_of(as_of: dt.datetime, ts: dt.datetime) -> int:
    """k such that ts is in [T − 7(k+1) days, T − 7k days); requires ts < T."""
    k = 0
    while ts < as_of - (k + 1) * WEEK:
        k += 1
    return k


def evaluate_user(
    events: Iterable[Event],
    goals: Iterable[tuple[int, int]],  # (sub_category_id, tier) of each selected goal
    app_sub_categories: Mapping[str, set],  # service app package_name -> its sub-categories
    as_of: dt.datetime,
) -> dict:
    """Signals, counts and milestones of one user as of T."""
    goals = list(goals)
    tiers_by_sub: dict = {}
    for sub_category, tier in goals:
        tiers_by_sub.setdefault(sub_category, set()).add(tier)

    event_count = service_count = aligned_count = 0
    weekly = [0] * 10
    max_aligned_fg = 0
    week0_sessions: dict[str, set] = {}
    has_tier = {1: False, 2: False}
    for ev in events:
        if not ev.timestamp < as_of:
            continue
        event_count += 1
        subs = app_sub_categories.get(ev.app_id)
        if subs is None:
            continue
        service_count += 1
        tiers = set()
        for sub in subs:
            tiers |= tiers_by_sub.get(sub, set())
        if not any(sub in tiers_by_sub for sub in subs):
            continue
        aligned_count += 1
        for t in tiers:
            if t in has_tier:
                has_tier[t] = True
        max_aligned_fg = max(max_aligned_fg, ev.foreground_time_ms)
        k = week_of(as_of, ev.timestamp)
        if k < 10:
            weekly[k] += ev.foreground_time_ms
        if k == 0:
            week0_sessions.setdefault(ev.app_id, set()).add(ev.session_id)

    active = [f > 0 for f in weekly]
    goal_setting = len(goals) > 0
    signals = {
        "goal_setting_completed": goal_setting,
        "customer_app_registration_completed": max_aligned_fg >= 240_000
        or any(len(s) >= 4 for s in week0_sessions.values()),
        "customer_app_login_completed": max_aligned_fg >= 60_000,
        "customer_app_engaged": all(active[0:3]),
        "customer_app_engagement_dropoff": active[1] and not active[0],
        "customer_app_retained": all(active[0:9]),
        "customer_app_retained_dropoff": all(active[1:10]) and not active[0],
    }
    counts = {
        "event_count": event_count,
        "service_event_count": service_count,
        "aligned_event_count": aligned_count,
    }
    milestones = {"goal_setting_complete": goal_setting}
    pairs = {
        "app_registered": "customer_app_registration_completed",
        "app_engaged": "customer_app_engaged",
        "app_engagement_dropoff": "customer_app_engagement_dropoff",
        "app_retained": "customer_app_retained",
        "app_retention_dropoff": "customer_app_retained_dropoff",
    }
    for k in (1, 2):
        for name, signal in pairs.items():
            milestones[f"tier{k}_{name}"] = goal_setting and signals[signal] and has_tier[k]
    return {"signals": signals, "counts": counts, "milestones": milestones}
