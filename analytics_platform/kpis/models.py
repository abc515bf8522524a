"""The P (goal attainment) and S (churn risk) models of the inactivity job, vectorised.

Pure numpy/scipy: no database, no Dagster.  Every function takes arrays with one element
per user and returns arrays of the same length, so a run over 30 000 inactive users is a
handful of array operations, not a Python loop.  Formulas (docs/metrics.md):

* S = 1 - exp(-d / churn_horizon_days), d = days since the last activity (fractional).
* Normal model: m = mean(x), s = sample standard deviation (0 when n = 1),
  sigma = max(s, 10), P_state = Phi((m - tau) / (sigma / sqrt(n))).
* Bayesian model: alpha = 1 + sum(x)/100, beta = 1 + sum(1 - x/100),
  P_state = 1 - BetaCDF(tau/100; alpha, beta).
* P = P_state * (1 - S).  With n = 0 there is no P (NaN here; nothing is written for it).

Per-user validation (a score that is NaN or outside [0, 100] fails that user only) is in
:func:`evaluate_users`, which also turns any non-finite result into a per-user failure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

SIGMA_FLOOR = 10.0
SCORE_MIN = 0.0
SCORE_MAX = 100.0

STATUS_OK = "ok"  # P and S computed
STATUS_NO_SCORES = "no_scores"  # n = 0: only S
STATUS_FAILED = "failed"  # nothing written for the user


def churn_risk(days_inactive: np.ndarray, churn_horizon_days: float) -> np.ndarray:
    """S = 1 - exp(-d / horizon)."""
    d = np.asarray(days_inactive, dtype=float)
    return 1.0 - np.exp(-d / float(churn_horizon_days))


def goal_state_normal(
    n: np.ndarray, mean: np.ndarray, stddev: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """P_state = Phi((m - tau) / (sigma / sqrt(n))), sigma = max(s, 10), s = 0 when n = 1.

    ``stddev`` is the sample standard deviation (ddof = 1); its value for n = 1 (NULL/NaN
    from the database) is ignored.  Users with n = 0 get NaN.
    """
    n = np.asarray(n, dtype=float)
    mean = np.asarray(mean, dtype=float)
    s = np.where(n > 1, np.asarray(stddev, dtype=float), 0.0)
    sigma = np.maximum(s, SIGMA_FLOOR)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (mean - np.asarray(target, dtype=float)) / (sigma / np.sqrt(n))
        out = stats.norm.cdf(z)
    return np.where(n > 0, out, np.nan)


def goal_state_bayesian(n: np.ndarray, score_sum: np.ndarray, target: np.ndarray) -> np.ndarray:
    """P_state = 1 - BetaCDF(tau/100; 1 + sum(x)/100, 1 + sum(1 - x/100)).

    sum(1 - x_i/100) = n - sum(x_i)/100.  Users with n = 0 get NaN.
    """
    n = np.asarray(n, dtype=float)
    scaled_sum = np.asarray(score_sum, dtype=float) / 100.0
    alpha = 1.0 + scaled_sum
    beta = 1.0 + (n - scaled_sum)
    with np.errstate(invalid="ignore"):
        out = 1.0 - stats.beta.cdf(np.asarray(target, dtype=float) / 100.0, alpha, beta)
    return np.where(n > 0, out, np.nan)


@dataclass(frozen=True)
class ModelParams:
    use_bayesian: bool
    default_target: float
    churn_horizon_days: float


def evaluate_users(users: pd.DataFrame, params: ModelParams) -> pd.DataFrame:
    """P and S for every inactive user, with per-user failure isolation.

    ``users`` has one row per inactive user and the columns
    ``user_id, days_inactive, n_scores, score_mean, score_stddev, score_sum, n_nan,
    score_min, score_max, goal_target[, goal_nan]`` (the aggregates of the user's non-NULL
    scores in the window; ``goal_target`` = highest non-NaN ``interest_goal.target_score`` or
    NaN when the user has none; ``goal_nan`` = how many of the user's targets are NaN, which
    fails the user).

    Returns ``user_id, days_inactive, n_scores, target, S, P, status, reason`` where status is
    ``ok`` (write P and S), ``no_scores`` (write S only; P is NaN) or ``failed`` (write
    nothing; ``reason`` says why).
    """
    n = users["n_scores"].to_numpy(dtype=float)
    days = users["days_inactive"].to_numpy(dtype=float)
    goal = users["goal_target"].to_numpy(dtype=float)
    has_goal = ~pd.isna(users["goal_target"]).to_numpy()
    target = np.where(has_goal, goal, float(params.default_target))

    s_value = churn_risk(days, params.churn_horizon_days)
    if params.use_bayesian:
        p_state = goal_state_bayesian(n, users["score_sum"].to_numpy(dtype=float), target)
    else:
        p_state = goal_state_normal(
            n,
            users["score_mean"].to_numpy(dtype=float),
            users["score_stddev"].to_numpy(dtype=float),
            target,
        )
    p_value = p_state * (1.0 - s_value)

    reasons = _failure_reasons(users, n, target, s_value, p_value)
    failed = reasons.notna().to_numpy()
    status = np.where(failed, STATUS_FAILED, np.where(n == 0, STATUS_NO_SCORES, STATUS_OK))
    return pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy(),
            "days_inactive": days,
            "n_scores": n.astype(np.int64),
            "target": target,
            "S": np.where(failed, np.nan, s_value),
            "P": np.where(failed | (n == 0), np.nan, p_value),
            "status": status,
            "reason": reasons.to_numpy(),
        }
    )


def _failure_reasons(
    users: pd.DataFrame, n: np.ndarray, target: np.ndarray, s_value: np.ndarray, p_value: np.ndarray
) -> pd.Series:
    """Per user: the first reason it fails (None when it does not), vectorised."""
    n_nan = users["n_nan"].fillna(0).to_numpy(dtype=float)
    low = users["score_min"].to_numpy(dtype=float)
    high = users["score_max"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        below = low < SCORE_MIN
        above = high > SCORE_MAX
    reasons = pd.Series([None] * len(users), dtype=object, index=users.index)

    def set_where(mask: np.ndarray, texts) -> None:
        mask = mask & reasons.isna().to_numpy()
        if mask.any():
            values = texts if isinstance(texts, str) else pd.Series(texts, index=users.index)[mask]
            reasons[mask] = values

    set_where(n_nan > 0, pd.Series(n_nan).map(lambda k: f"{int(k)} score(s) are NaN").to_numpy())
    set_where(below, pd.Series(low).map(lambda v: f"score {v:g} outside [0, 100]").to_numpy())
    set_where(above, pd.Series(high).map(lambda v: f"score {v:g} outside [0, 100]").to_numpy())
    if "goal_nan" in users:
        goal_nan = users["goal_nan"].fillna(0).to_numpy(dtype=float)
        set_where(goal_nan > 0, "interest_goal.target_score is NaN")
    set_where(~np.isfinite(target), pd.Series(target).map(lambda v: f"target {v} is not finite").to_numpy())
    set_where(~np.isfinite(s_value), "churn risk S is not finite (last activity or horizon)")
    set_where((n > 0) & ~np.isfinite(p_value), "goal probability P is not finite")
    return reasons
