"""Engagement signals and goal milestones: the rules of specs/signals.md as pure,
vectorised functions (pandas/numpy; no Dagster, no I/O).

Input: one row per evaluated user with aggregates computed set-based in PostgreSQL
(``sql/engagement/postgres/user_aggregates.sql``), as of a timestamp T:

=============================  ==============================================================
column                         meaning (events before T only)
=============================  ==============================================================
user_id                        the user
has_goal                       the user has at least one row in ``user_goals``
event_count                    all events
service_event_count            events whose ``app_id`` is a ``package_name`` in ``apps``
aligned_event_count            goal-aligned events
max_aligned_foreground_ms      largest ``foreground_time_ms`` of one goal-aligned event
max_app_sessions_week0         max over goal-aligned apps of the distinct ``session_id``s in week 0
f0 … f9                        F_k: sum of ``foreground_time_ms`` of goal-aligned events in week k
has_tier1_event/has_tier2_event  at least one tier-1 / tier-2 aligned event
=============================  ==============================================================

Week k is [T − 7(k+1) days, T − 7k days): an event exactly at T − 7 days is in week 0.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

REGISTRATION_FOREGROUND_MS = 240_000  # one event of >= 4 minutes
REGISTRATION_SESSIONS_WEEK0 = 4  # or >= 4 distinct sessions of one app in week 0
LOGIN_FOREGROUND_MS = 60_000  # one event of >= 1 minute
ENGAGED_WEEKS = 3  # F_0..F_2 > 0
RETAINED_WEEKS = 9  # F_0..F_8 > 0
WEEKS_NEEDED = RETAINED_WEEKS + 1  # retained drop-off looks at F_1..F_9
WEEK = dt.timedelta(days=7)

WEEK_COLUMNS = tuple(f"f{k}" for k in range(WEEKS_NEEDED))
AGGREGATE_COLUMNS = (
    "user_id",
    "has_goal",
    "event_count",
    "service_event_count",
    "aligned_event_count",
    "max_aligned_foreground_ms",
    "max_app_sessions_week0",
    *WEEK_COLUMNS,
    "has_tier1_event",
    "has_tier2_event",
)

SIGNAL_FLAGS = (
    "goal_setting_completed",
    "customer_app_registration_completed",
    "customer_app_login_completed",
    "customer_app_engaged",
    "customer_app_engagement_dropoff",
    "customer_app_retained",
    "customer_app_retained_dropoff",
)
SIGNAL_COUNTS = ("event_count", "service_event_count", "aligned_event_count")
SIGNAL_COLUMNS = ("user_id", *SIGNAL_FLAGS, *SIGNAL_COUNTS)

TIERS = (1, 2)
_MILESTONE_SIGNAL = {
    "app_registered": "customer_app_registration_completed",
    "app_engaged": "customer_app_engaged",
    "app_engagement_dropoff": "customer_app_engagement_dropoff",
    "app_retained": "customer_app_retained",
    "app_retention_dropoff": "customer_app_retained_dropoff",
}
MILESTONE_FLAGS = ("goal_setting_complete",) + tuple(
    f"tier{k}_{name}" for k in TIERS for name in _MILESTONE_SIGNAL
)
MILESTONE_COLUMNS = ("user_id", *MILESTONE_FLAGS)
MILESTONE_INPUT_COLUMNS = ("user_id", *SIGNAL_FLAGS, "has_tier1_event", "has_tier2_event")


def as_of_for_day(day: dt.date) -> dt.datetime:
    """T for the daily partition ``day``: the end of that UTC day (next day 00:00 UTC)."""
    nxt = day + dt.timedelta(days=1)
    return dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=dt.timezone.utc)


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} is missing columns: {', '.join(missing)}")


def compute_signals(aggregates: pd.DataFrame) -> pd.DataFrame:
    """Per-user aggregates -> one row per user with the seven signals and three counts."""
    _require(aggregates, AGGREGATE_COLUMNS, "aggregates")
    agg = aggregates.reset_index(drop=True)
    active = np.column_stack(
        [pd.to_numeric(agg[c], errors="coerce").fillna(0).to_numpy() > 0 for c in WEEK_COLUMNS]
    ) if len(agg) else np.zeros((0, WEEKS_NEEDED), dtype=bool)
    max_fg = pd.to_numeric(agg["max_aligned_foreground_ms"], errors="coerce").fillna(0).to_numpy()
    sessions0 = pd.to_numeric(agg["max_app_sessions_week0"], errors="coerce").fillna(0).to_numpy()

    out = pd.DataFrame({"user_id": agg["user_id"].astype(str)})
    out["goal_setting_completed"] = agg["has_goal"].fillna(False).astype(bool).to_numpy()
    out["customer_app_registration_completed"] = (max_fg >= REGISTRATION_FOREGROUND_MS) | (
        sessions0 >= REGISTRATION_SESSIONS_WEEK0
    )
    out["customer_app_login_completed"] = max_fg >= LOGIN_FOREGROUND_MS
    out["customer_app_engaged"] = active[:, :ENGAGED_WEEKS].all(axis=1)
    out["customer_app_engagement_dropoff"] = active[:, 1] & ~active[:, 0]
    out["customer_app_retained"] = active[:, :RETAINED_WEEKS].all(axis=1)
    out["customer_app_retained_dropoff"] = active[:, 1:WEEKS_NEEDED].all(axis=1) & ~active[:, 0]
    for column in SIGNAL_COUNTS:
        out[column] = pd.to_numeric(agg[column], errors="coerce").fillna(0).astype("int64").to_numpy()
    return out[list(SIGNAL_COLUMNS)]


def compute_milestones(inputs: pd.DataFrame) -> pd.DataFrame:
    """Signals + tier flags per user -> one row per user with the eleven milestones."""
    _require(inputs, MILESTONE_INPUT_COLUMNS, "milestone inputs")
    frame = inputs.reset_index(drop=True)

    def flag(column: str) -> np.ndarray:
        return frame[column].fillna(False).astype(bool).to_numpy()

    goal = flag("goal_setting_completed")
    out = pd.DataFrame({"user_id": frame["user_id"].astype(str)})
    out["goal_setting_complete"] = goal
    for k in TIERS:
        has_tier = flag(f"has_tier{k}_event")
        for name, signal in _MILESTONE_SIGNAL.items():
            out[f"tier{k}_{name}"] = goal & flag(signal) & has_tier
    return out[list(MILESTONE_COLUMNS)]
