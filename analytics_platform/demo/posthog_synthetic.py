"""Deterministic synthetic PostHog + Firebase data (numpy, vectorised; no Dagster).

Used by the demo (a few hundred sessions) and by the ``sessions`` benchmark (millions of
events).  Every session gets at least one event; some start late in the evening and run
past midnight; a fraction of events carry no ``$session_id``; a fraction of PostHog users
have no Firebase user row; scroll events carry ``touch_y`` / ``screen_height`` (some
without usable values).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics_platform.common import day_start, to_epoch_micros

EVENT_NAMES = np.array(
    ["$pageview", "$screen", "$autocapture", "scroll", "event_created", "quiz_started", "quiz_completed", "app_opened"]
)
EVENT_WEIGHTS = np.array([0.22, 0.2, 0.18, 0.16, 0.08, 0.06, 0.05, 0.05])
SCREEN_HEIGHTS = np.array([640, 736, 800, 844, 915, 1024])
CHANNELS = np.array(["Direct", "Organic Search", "Paid Social", "Referral", "Email"])
UTM_SOURCES = np.array(["newsletter", "facebook", "google", "partner"])
PATHS = np.array(["/home", "/quiz", "/create", "/profile", "/feed"])


@dataclass
class SyntheticData:
    posthog_events: pd.DataFrame
    posthog_sessions: pd.DataFrame
    firebase_users: pd.DataFrame
    firebase_events: pd.DataFrame


def _to_ts(us: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(us, unit="us", utc=True))


def generate(
    *,
    n_sessions: int,
    n_events: int,
    first_day: dt.date,
    n_days: int,
    n_users: int,
    seed: int = 42,
    no_session_fraction: float = 0.01,
    missing_user_fraction: float = 0.1,
    firebase_events_per_session: float = 2.0,
    mean_session_seconds: float = 600.0,
) -> SyntheticData:
    """Sessions over the UTC days ``[first_day, first_day + n_days)``."""
    if n_events < n_sessions:
        raise ValueError("need at least one event per session")
    rng = np.random.default_rng(seed)
    base = to_epoch_micros(day_start(first_day))
    users = np.char.add("user-", np.char.zfill(np.arange(n_users).astype(str), 6))

    # --- sessions -------------------------------------------------------------------------
    sess_user = rng.integers(0, n_users, n_sessions)
    start_us = (
        base
        + rng.integers(0, n_days, n_sessions) * 86_400_000_000
        + rng.integers(0, 86_400_000_000, n_sessions)
    )
    dur_us = np.minimum(rng.exponential(mean_session_seconds, n_sessions), 4 * 3600) * 1_000_000
    dur_us = dur_us.astype(np.int64)

    n_no_session = int(round((n_events - n_sessions) * no_session_fraction))
    n_in_sessions = n_events - n_no_session
    counts = 1 + rng.multinomial(n_in_sessions - n_sessions, np.full(n_sessions, 1.0 / n_sessions))
    idx = np.repeat(np.arange(n_sessions), counts)
    first_pos = np.concatenate(([0], np.cumsum(counts)[:-1]))
    last_pos = np.cumsum(counts) - 1
    offset = (rng.random(n_in_sessions) * dur_us[idx]).astype(np.int64)
    offset[first_pos] = 0
    multi = counts > 1
    offset[last_pos[multi]] = dur_us[multi]
    ev_us = start_us[idx] + offset
    names = rng.choice(EVENT_NAMES, size=n_in_sessions, p=EVENT_WEIGHTS)
    session_ids = np.char.add("sess-", np.arange(n_sessions).astype(str))
    sid = pd.Series(session_ids[idx])
    is_scroll = names == "scroll"
    touch_y = rng.integers(-20, 1100, n_in_sessions).astype(str)
    screen_h = rng.choice(SCREEN_HEIGHTS, n_in_sessions).astype(str)
    unusable = rng.random(n_in_sessions) < 0.05  # scroll events without touch_y
    scroll_part = np.where(
        is_scroll & ~unusable,
        np.char.add(np.char.add(np.char.add(', "touch_y": ', touch_y), ', "screen_height": '), screen_h),
        np.where(is_scroll, np.char.add(', "screen_height": ', screen_h), ""),
    )
    props = '{"$session_id": "' + sid + '"' + pd.Series(scroll_part) + "}"

    # --- events without $session_id -------------------------------------------------------
    ns_us = base + rng.integers(0, n_days * 86_400_000_000, n_no_session)
    ns_user = rng.integers(0, n_users, n_no_session)
    ns_props = pd.Series(np.full(n_no_session, '{"$lib": "posthog-ios"}'))

    all_us = np.concatenate([ev_us, ns_us])
    events = pd.DataFrame(
        {
            "uuid": np.char.add("ev-", np.arange(n_events).astype(str)),
            "event": np.concatenate([names, np.full(n_no_session, "$identify")]),
            "properties": pd.concat([props, ns_props], ignore_index=True),
            "distinct_id": np.concatenate([users[sess_user[idx]], users[ns_user]]),
            "team_id": 1,
            "timestamp": _to_ts(all_us),
        }
    )

    # --- PostHog sessions export ------------------------------------------------------------
    has_utm = rng.random(n_sessions) < 0.3
    sessions = pd.DataFrame(
        {
            "session_id": session_ids,
            "distinct_id": users[sess_user],
            "start_timestamp": _to_ts(start_us),
            "end_timestamp": _to_ts(start_us + np.where(multi, dur_us, 0)),
            "session_duration": (np.where(multi, dur_us, 0) // 1_000_000).astype(np.int64),
            "entry_current_url": np.char.add("https://app.example", rng.choice(PATHS, n_sessions)),
            "end_current_url": np.char.add("https://app.example", rng.choice(PATHS, n_sessions)),
            "is_bounce": ~multi,
            "channel_type": rng.choice(CHANNELS, n_sessions),
            "entry_utm_source": np.where(has_utm, rng.choice(UTM_SOURCES, n_sessions), None),
        }
    )

    # --- Firebase ---------------------------------------------------------------------------
    in_firebase = rng.random(n_users) >= missing_user_fraction
    fb_users_idx = np.flatnonzero(in_firebase)
    firebase_users = pd.DataFrame(
        {
            "user_id": users[fb_users_idx],
            "created_at": _to_ts(base - rng.integers(0, 90 * 86_400_000_000, fb_users_idx.size)),
            "platform": rng.choice(np.array(["ios", "android"]), fb_users_idx.size),
            "country": rng.choice(np.array(["US", "DE", "GB", "FR", "BR"]), fb_users_idx.size),
            "properties": "{}",
        }
    )
    n_fb = int(n_sessions * firebase_events_per_session)
    half = n_fb // 2
    fb_sess = rng.integers(0, n_sessions, half)  # inside a session's time span
    inside_us = start_us[fb_sess] + (rng.random(half) * (dur_us[fb_sess] + 1)).astype(np.int64)
    outside_us = base + rng.integers(0, n_days * 86_400_000_000, n_fb - half)
    fb_us = np.concatenate([inside_us, outside_us])
    fb_user = np.concatenate([users[sess_user[fb_sess]], users[rng.integers(0, n_users, n_fb - half)]])
    fb_dates = pd.to_datetime(fb_us, unit="us", utc=True).strftime("%Y%m%d")
    firebase_events = pd.DataFrame(
        {
            "event_date": np.asarray(fb_dates),
            "event_timestamp": fb_us.astype(np.int64),
            "event_name": rng.choice(np.array(["screen_view", "session_start", "quiz_answer"]), n_fb),
            "user_id": fb_user,
            "user_pseudo_id": np.char.add("p-", fb_user),
            "platform": "IOS",
        }
    )
    return SyntheticData(events, sessions, firebase_users, firebase_events)
