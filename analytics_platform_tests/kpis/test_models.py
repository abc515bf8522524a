"""The P/S models against hand-derived values (pure functions, no database)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analytics_platform.kpis.rules import (
    ModelParams,
    churn_risk,
    evaluate_users,
    goal_state_bayesian,
    goal_state_normal,
)

TOL = 1e-9


def phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def test_churn_risk_formula():
    got = churn_risk(np.array([0.0, 7.0, 16.5, 30.0]), 14.0)
    want = [1 - math.exp(-d / 14.0) for d in (0.0, 7.0, 16.5, 30.0)]
    assert got == pytest.approx(want, abs=TOL)
    assert churn_risk(np.array([10.0]), 5.0)[0] == pytest.approx(1 - math.exp(-2.0), abs=TOL)


def test_normal_single_score_uses_sigma_floor():
    # n = 1: s = 0 -> sigma = 10; z = (80 - 60) / (10 / 1) = 2
    got = goal_state_normal(np.array([1]), np.array([80.0]), np.array([np.nan]), np.array([60.0]))
    assert got[0] == pytest.approx(phi(2.0), abs=TOL)
    assert got[0] == pytest.approx(0.9772498680518208, abs=TOL)


def test_normal_sample_std_above_floor():
    x = [40.0, 60.0, 80.0, 100.0]
    m = sum(x) / 4
    s = math.sqrt(sum((v - m) ** 2 for v in x) / 3)  # sample std, 25.82
    assert s > 10
    got = goal_state_normal(np.array([4]), np.array([m]), np.array([s]), np.array([75.0]))
    assert got[0] == pytest.approx(phi((m - 75.0) / (s / 2.0)), abs=TOL)


def test_normal_small_spread_is_floored():
    # s = 2 < 10 -> sigma = 10
    got = goal_state_normal(np.array([3]), np.array([72.0]), np.array([2.0]), np.array([70.0]))
    assert got[0] == pytest.approx(phi(2.0 / (10.0 / math.sqrt(3))), abs=TOL)


def test_bayesian_closed_forms():
    # x = [100]: alpha = 2, beta = 1 -> CDF(t) = t^2
    # x = [100, 0]: alpha = 2, beta = 2 -> CDF(t) = 3t^2 - 2t^3
    # x = [0]: alpha = 1, beta = 2 -> CDF(t) = 1 - (1 - t)^2
    got = goal_state_bayesian(
        np.array([1, 2, 1, 1]), np.array([100.0, 100.0, 0.0, 100.0]), np.array([60.0, 30.0, 25.0, 0.0])
    )
    assert got[0] == pytest.approx(1 - 0.6**2, abs=TOL)
    assert got[1] == pytest.approx(1 - (3 * 0.3**2 - 2 * 0.3**3), abs=TOL)
    assert got[2] == pytest.approx((1 - 0.25) ** 2, abs=TOL)
    assert got[3] == pytest.approx(1.0, abs=TOL)  # target 0: certain


def test_no_scores_gives_nan_in_both_models():
    assert np.isnan(goal_state_normal(np.array([0]), np.array([np.nan]), np.array([np.nan]), np.array([50.0]))[0])
    assert np.isnan(goal_state_bayesian(np.array([0]), np.array([np.nan]), np.array([50.0]))[0])


def _users(rows: list[dict]) -> pd.DataFrame:
    base = dict(goal_nan=0, n_scores=0, score_mean=np.nan, score_stddev=np.nan, score_sum=np.nan, n_nan=0,
                score_min=np.nan, score_max=np.nan, goal_target=np.nan, days_inactive=10.0)
    return pd.DataFrame([{**base, **r} for r in rows])


def test_evaluate_users_statuses_targets_and_failures():
    users = _users([
        dict(user_id="goal", n_scores=1, score_mean=80.0, score_sum=80.0, score_min=80.0, score_max=80.0,
             goal_target=60.0, days_inactive=16.0),
        dict(user_id="default", n_scores=1, score_mean=80.0, score_sum=80.0, score_min=80.0, score_max=80.0),
        dict(user_id="none", n_scores=0),
        dict(user_id="nan", n_scores=2, score_mean=np.nan, n_nan=1, score_min=50.0, score_max=50.0),
        dict(user_id="high", n_scores=1, score_mean=150.0, score_min=150.0, score_max=150.0),
        dict(user_id="low", n_scores=1, score_mean=-5.0, score_min=-5.0, score_max=-5.0),
        dict(user_id="nogoal", n_scores=1, score_mean=50.0, score_min=50.0, score_max=50.0, goal_target=np.nan),
        dict(user_id="nangoal", n_scores=1, score_mean=50.0, score_min=50.0, score_max=50.0, goal_nan=1),
    ])
    out = evaluate_users(users, ModelParams(use_bayesian=False, default_target=70.0, churn_horizon_days=14.0)).set_index("user_id")

    s16 = 1 - math.exp(-16 / 14)
    assert out.loc["goal", "status"] == "ok"
    assert out.loc["goal", "target"] == 60.0  # interest_goal wins over the default
    assert out.loc["goal", "S"] == pytest.approx(s16, abs=TOL)
    assert out.loc["goal", "P"] == pytest.approx(phi(2.0) * (1 - s16), abs=TOL)
    assert out.loc["default", "target"] == 70.0
    assert out.loc["default", "P"] == pytest.approx(phi(1.0) * math.exp(-10 / 14), abs=TOL)
    assert out.loc["none", "status"] == "no_scores"
    assert np.isnan(out.loc["none", "P"]) and out.loc["none", "S"] == pytest.approx(1 - math.exp(-10 / 14), abs=TOL)
    assert out.loc["nan", "status"] == "failed" and "NaN" in out.loc["nan", "reason"]
    assert out.loc["high", "status"] == "failed" and out.loc["high", "reason"] == "score 150 outside [0, 100]"
    assert out.loc["low", "status"] == "failed" and out.loc["low", "reason"] == "score -5 outside [0, 100]"
    # no (non-NULL) goal: the default target applies; a NaN target_score fails the user
    assert out.loc["nogoal", "status"] == "ok" and out.loc["nogoal", "target"] == 70.0
    assert out.loc["nangoal", "status"] == "failed" and "target_score" in out.loc["nangoal", "reason"]
    for user in ("nan", "high", "low"):
        assert np.isnan(out.loc[user, "P"]) and np.isnan(out.loc[user, "S"])


def test_evaluate_users_bayesian_and_non_finite_result_fails_user():
    users = _users([
        dict(user_id="a", n_scores=1, score_mean=100.0, score_sum=100.0, score_min=100.0, score_max=100.0,
             goal_target=60.0, days_inactive=14.0),
        dict(user_id="inf", n_scores=1, score_mean=50.0, score_sum=50.0, score_min=50.0, score_max=50.0,
             goal_target=float("inf")),
    ])
    out = evaluate_users(users, ModelParams(use_bayesian=True, default_target=0.0, churn_horizon_days=14.0)).set_index("user_id")
    assert out.loc["a", "P"] == pytest.approx((1 - 0.36) * math.exp(-1.0), abs=TOL)
    assert out.loc["inf", "status"] == "failed" and "target" in out.loc["inf", "reason"]
