"""Acceptance 2: S and P written to weekly_kpi equal the spec's formulas within 1e-9 on
hand-checked cases (normal and Bayesian), on a real PostgreSQL."""

from __future__ import annotations

import math
import re

import pytest

from analytics_platform.kpis.store import recalculate

from .conftest import days_before, params

TOL = 1e-9


def phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def churn(days: float, horizon: float = 14.0) -> float:
    return 1.0 - math.exp(-days / horizon)


def normal_p(scores: list[float], target: float, days: float) -> float:
    n = len(scores)
    m = sum(scores) / n
    s = math.sqrt(sum((x - m) ** 2 for x in scores) / (n - 1)) if n > 1 else 0.0
    sigma = max(s, 10.0)
    return phi((m - target) / (sigma / math.sqrt(n))) * (1 - churn(days))


@pytest.fixture
def cohort(kpi_db):
    """Hand-checked learners; every score inside the 30-day window, last activity = newest score."""
    db = kpi_db
    # n = 1, target from interest_goal (highest of two goals: 60)
    db.goal("one_goal", 40.0)
    db.goal("one_goal", 60.0)
    db.exams("one_goal", [80.0], at=days_before(16))
    # n = 4 with s > 10, goal 75
    db.goal("four_goal", 75.0)
    db.exams("four_goal", [40.0, 60.0, 80.0, 100.0], at=days_before(9))
    # n = 3 with s < 10 (floored), default target
    db.exams("three_default", [70.0, 72.0, 74.0], at=days_before(20.5))
    # Bayesian closed forms: [100] -> Beta(2,1); [100, 0] -> Beta(2,2); [0] -> Beta(1,2)
    db.goal("bayes_21", 60.0)
    db.exams("bayes_21", [100.0], at=days_before(14))
    db.goal("bayes_22", 30.0)
    db.exams("bayes_22", [100.0, 0.0], at=days_before(8))
    db.goal("bayes_12", 25.0)
    db.exams("bayes_12", [0.0], at=days_before(10))
    # scores outside the window or NULL are not counted
    db.exams("windowed", [10.0], at=days_before(45))
    db.exam("windowed", None, created_at=days_before(12))
    db.exams("windowed", [90.0], at=days_before(12))
    # n = 0 with an existing row whose P must stay untouched
    db.feature("no_scores", days_before(21))
    db.kpi_row("no_scores", {"P": 0.42, "S": 0.1, "E_t": 3})
    return db


def test_normal_model_values(cohort, log):
    result = recalculate(cohort.engine, params(default_target=65.0), log=log)
    assert result.failed == 0
    got = {u: cohort.kpis(u) for u in ("one_goal", "four_goal", "three_default", "windowed")}
    assert got["one_goal"]["S"] == pytest.approx(churn(16), abs=TOL)
    assert got["one_goal"]["P"] == pytest.approx(normal_p([80.0], 60.0, 16), abs=TOL)
    assert got["one_goal"]["P"] == pytest.approx(0.9772498680518208 * math.exp(-16 / 14), abs=TOL)
    assert got["four_goal"]["P"] == pytest.approx(normal_p([40.0, 60.0, 80.0, 100.0], 75.0, 9), abs=TOL)
    assert got["three_default"]["S"] == pytest.approx(churn(20.5), abs=TOL)
    assert got["three_default"]["P"] == pytest.approx(normal_p([70.0, 72.0, 74.0], 65.0, 20.5), abs=TOL)
    # only the in-window, non-NULL score 90 counts: n = 1, default target 65
    assert got["windowed"]["P"] == pytest.approx(normal_p([90.0], 65.0, 12), abs=TOL)


def test_bayesian_model_values(cohort):
    recalculate(cohort.engine, params(use_bayesian=True))
    k21, k22, k12 = (cohort.kpis(u) for u in ("bayes_21", "bayes_22", "bayes_12"))
    assert k21["P"] == pytest.approx((1 - 0.6**2) * (1 - churn(14)), abs=TOL)
    assert k22["P"] == pytest.approx((1 - (3 * 0.3**2 - 2 * 0.3**3)) * (1 - churn(8)), abs=TOL)
    assert k12["P"] == pytest.approx((1 - 0.25) ** 2 * (1 - churn(10)), abs=TOL)
    # default target 0 -> BetaCDF(0) = 0 -> P_state = 1 -> P = 1 - S
    three = cohort.kpis("three_default")
    assert three["P"] == pytest.approx(1 - churn(20.5), abs=TOL)


def test_churn_horizon_from_params(cohort):
    recalculate(cohort.engine, params(churn_horizon_days=7.0))
    assert cohort.kpis("one_goal")["S"] == pytest.approx(churn(16, 7.0), abs=TOL)


def test_no_scores_writes_only_s_warns_and_counts_as_processed(cohort, log):
    result = recalculate(cohort.engine, params(), log=log)
    kpis = cohort.kpis("no_scores")
    assert kpis["P"] == 0.42  # untouched
    assert kpis["E_t"] == 3
    assert kpis["S"] == pytest.approx(churn(21), abs=TOL)
    warnings = [m for m in log.messages("warning") if "user=no_scores" in m]
    assert len(warnings) == 1
    assert result.no_scores == 1
    assert result.processed == result.inactive == 8
    assert re.fullmatch(r"Summary: processed=8, failed=0, threshold=7 days, duration_ms=\d+", log.messages("info")[-1])


def test_no_scores_and_no_row_inserts_only_s(kpi_db):
    kpi_db.attempt("fresh", days_before(8))
    recalculate(kpi_db.engine, params())
    assert set(kpi_db.kpis("fresh")) == {"S"}


@pytest.mark.parametrize("bayesian, expected_p", [(False, 0.242448691), (True, 0.132565582)])
def test_worked_example_of_docs_metrics(kpi_db, bayesian, expected_p):
    """docs/metrics.md, learner A: scores 70 and 80, goals 60 and 70, inactive 16 days."""
    kpi_db.goal("A", 60.0)
    kpi_db.goal("A", 70.0)
    kpi_db.exams("A", [70.0, 80.0], at=days_before(16))
    kpi_db.feature("B", days_before(21))
    recalculate(kpi_db.engine, params(use_bayesian=bayesian))
    a = kpi_db.kpis("A")
    assert a["S"] == pytest.approx(0.681093443, abs=1e-9)
    assert a["P"] == pytest.approx(expected_p, abs=1e-9)
    assert kpi_db.kpis("B") == {"S": pytest.approx(0.776869840, abs=1e-9)}


def test_per_user_warnings_are_folded_into_one_line_with_the_full_list_in_metadata(kpi_db, log):
    """Issue 17.3: 40 learners without scores give ONE warning line (count + first ids),
    not 40; every id is in the result's metadata."""
    users = [f"quiet_{i:02d}" for i in range(40)]
    for user in users:
        kpi_db.attempt(user, days_before(9))
    result = recalculate(kpi_db.engine, params(), log=log)
    warnings = log.messages("warning")
    assert len(warnings) == 1
    assert warnings[0].startswith("40 users without exam scores") and "user=quiet_00" in warnings[0]
    assert "and 30 more" in warnings[0]
    assert sorted(result.metadata()["users_without_scores"].value) == users
