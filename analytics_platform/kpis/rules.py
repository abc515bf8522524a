"""Pure rules of the inactivity KPI job (no database, no Dagster, no SQL): the run
parameters, the P (goal attainment) and S (churn risk) models, the high-churn selection and
its Slack summary, the report sample, and the external-write sensor's cursor.

The models are vectorised numpy/scipy (scipy is imported lazily, on first use, so loading
the Dagster definitions stays light).  Every function takes arrays with one element
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

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd

from analytics_platform.common import UTC, week_start

SIGMA_FLOOR = 10.0
SCORE_MIN = 0.0
SCORE_MAX = 100.0

STATUS_OK = "ok"  # P and S computed
STATUS_NO_SCORES = "no_scores"  # n = 0: only S
STATUS_FAILED = "failed"  # nothing written for the user

HIGH_CHURN_THRESHOLD = 0.7
SAMPLE_SIZE = 20  # users shown in the report (old -> new)
TOP_USERS = 10  # users named in the high-churn Slack summary


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
    from scipy import stats  # lazy: scipy.stats is slow to import

    with np.errstate(divide="ignore", invalid="ignore"):
        z = (mean - np.asarray(target, dtype=float)) / (sigma / np.sqrt(n))
        out = stats.norm.cdf(z)
    return np.where(n > 0, out, np.nan)


def goal_state_bayesian(n: np.ndarray, score_sum: np.ndarray, target: np.ndarray) -> np.ndarray:
    """P_state = 1 - BetaCDF(tau/100; 1 + sum(x)/100, 1 + sum(1 - x/100)).

    sum(1 - x_i/100) = n - sum(x_i)/100.  Users with n = 0 get NaN.
    """
    from scipy import stats  # lazy: scipy.stats is slow to import

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


# ------------------------------------------------------------------------------ parameters
class RecalcConfigError(ValueError):
    """Invalid run parameters (the message says which and what is allowed)."""


@dataclass(frozen=True)
class RecalcParams:
    as_of: dt.datetime
    threshold_days: int
    lookback_days: int
    use_bayesian: bool
    default_target: float
    churn_horizon_days: float
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.as_of.tzinfo is None:
            raise RecalcConfigError("as_of must be timezone-aware (UTC)")
        object.__setattr__(self, "as_of", self.as_of.astimezone(UTC))
        if self.threshold_days < 0:
            raise RecalcConfigError(f"threshold_days must be >= 0, got {self.threshold_days}")
        if self.lookback_days < self.threshold_days:
            raise RecalcConfigError(
                f"lookback_days ({self.lookback_days}) must be >= threshold_days "
                f"({self.threshold_days}), otherwise no user can be inactive"
            )
        if not (math.isfinite(self.churn_horizon_days) and self.churn_horizon_days > 0):
            raise RecalcConfigError(
                f"churn_horizon_days must be a positive number, got {self.churn_horizon_days}"
            )
        if not math.isfinite(self.default_target):
            raise RecalcConfigError(f"default_target must be a finite number, got {self.default_target}")

    @property
    def week_start(self) -> dt.date:
        """Monday of as_of's UTC date."""
        return week_start(self.as_of.date())

    @property
    def lookback_start(self) -> dt.datetime:
        return self.as_of - dt.timedelta(days=self.lookback_days)

    @property
    def inactive_until(self) -> dt.datetime:
        return self.as_of - dt.timedelta(days=self.threshold_days)

    @property
    def model(self) -> ModelParams:
        return ModelParams(
            use_bayesian=self.use_bayesian,
            default_target=float(self.default_target),
            churn_horizon_days=float(self.churn_horizon_days),
        )


# ------------------------------------------------------------------------------ report
def sample_users(evaluated: pd.DataFrame, size: int = SAMPLE_SIZE) -> pd.DataFrame:
    """The users shown in the report: written ones, highest new S first."""
    ok = evaluated[evaluated["status"] != STATUS_FAILED]
    return ok.sort_values(["S", "user_id"], ascending=[False, True]).head(size)


def high_churn(evaluated: pd.DataFrame, threshold: float = HIGH_CHURN_THRESHOLD) -> pd.DataFrame:
    """Processed users whose new S > threshold, highest first."""
    if evaluated.empty:
        return evaluated
    ok = evaluated[evaluated["status"] != STATUS_FAILED]
    high = ok[ok["S"] > threshold]
    return high.sort_values(["S", "user_id"], ascending=[False, True]).reset_index(drop=True)


def _json_number(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def sample_changes(
    evaluated: pd.DataFrame, old_values: dict[str, tuple[Any, Any]], size: int = SAMPLE_SIZE
) -> list[dict]:
    """Up to ``size`` changes (user, old -> new P/S), highest new S first."""
    if evaluated.empty:
        return []
    out = []
    for r in sample_users(evaluated, size).itertuples(index=False):
        p_old, s_old = old_values.get(r.user_id, (None, None))
        out.append(
            {
                "user_id": r.user_id,
                "days_inactive": round(float(r.days_inactive), 3),
                "n_scores": int(r.n_scores),
                "P_old": _json_number(p_old),
                "P_new": None if pd.isna(r.P) else float(r.P),
                "S_old": _json_number(s_old),
                "S_new": float(r.S),
            }
        )
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def sample_markdown(sample: list[dict]) -> str:
    """The sample of :func:`sample_changes` as a Markdown table."""
    if not sample:
        return "No changes."
    lines = ["| user | days inactive | n | P old → new | S old → new |", "|---|---|---|---|---|"]
    for r in sample:
        lines.append(
            f"| {r['user_id']} | {r['days_inactive']:.2f} | {r['n_scores']} | "
            f"{_fmt(r['P_old'])} → {_fmt(r['P_new'])} | {_fmt(r['S_old'])} → {_fmt(r['S_new'])} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ high-churn summary
def format_high_churn(
    high: pd.DataFrame,
    *,
    week_start: str,
    as_of: str,
    threshold: float,
    run_url: Optional[str] = None,
    top: int = TOP_USERS,
) -> tuple[str, list[dict]]:
    """ONE Slack message (text, blocks) for the users whose new S > ``threshold`` (``high``
    sorted by S desc): the count and the top users.

    ``high`` has ``user_id``, ``S``, ``days_inactive`` and ``P`` (NaN when not computed).
    """
    count = len(high)
    head = (
        f"Inactivity KPI: {count} learner{'s' if count != 1 else ''} at high churn risk "
        f"(S > {threshold:g}) in week {week_start} (as_of {as_of})"
    )
    lines = []
    for r in high.head(top).itertuples(index=False):
        p = "n/a" if pd.isna(r.P) else f"{float(r.P):.3f}"
        lines.append(f"• `{r.user_id}` S={float(r.S):.3f}, P={p}, inactive {float(r.days_inactive):.1f} d")
    if count > top:
        lines.append(f"… and {count - top} more")
    link = f"<{run_url}|Open the run>" if run_url else ""
    text = "\n".join([head, *lines] + ([link] if link else []))
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{head}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines) or "-"}},
    ]
    if link:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": link}]})
    return text, blocks


# ------------------------------------------------------------------------------ external writes
# How the sensor tells a foreign write to weekly_kpi from the asset's own (store.py runs the
# queries): every run of the asset stamps the rows it writes with one ``updated_at`` value
# (its *watermark*) and records that value in ``weekly_kpi_recalc_runs`` in the same
# transaction, so a row whose ``updated_at`` equals a recorded watermark is the asset's own
# write - atomically, with no window in which the sensor could see the rows before the
# marker.  Every other row with a newer ``updated_at`` is a foreign write (the daily KPI batch).
#
# The cursor keeps ``hi`` (the newest foreign ``updated_at`` seen) and ``count`` (foreign
# rows with ``updated_at > low``, ``low = hi - overlap``).  A tick fires when a foreign row
# newer than ``hi`` appears, or when the count in ``(low, hi]`` grew - a writer whose
# transaction started earlier but committed after the last tick (PostgreSQL's ``now()`` is
# the transaction start).  The asset's own runs only ever turn foreign rows into own rows,
# which lowers the count, so they never trigger.
DEFAULT_OVERLAP = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Cursor:
    hi: Optional[dt.datetime]
    low: dt.datetime
    count: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "hi": self.hi.isoformat() if self.hi else None,
                "low": self.low.isoformat(),
                "count": self.count,
            }
        )

    @classmethod
    def from_json(cls, text: Optional[str]) -> Optional["Cursor"]:
        if not text:
            return None
        data = json.loads(text)
        hi = dt.datetime.fromisoformat(data["hi"]) if data.get("hi") else None
        return cls(hi=hi, low=dt.datetime.fromisoformat(data["low"]), count=int(data["count"]))


@dataclass(frozen=True)
class Decision:
    """``fire``: request a recalculation.  ``cursor``: the cursor to store (None: keep)."""

    fire: bool
    cursor: Optional[Cursor]
    reason: str
    new_rows: int = 0
