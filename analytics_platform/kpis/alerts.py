"""The high-churn summary: ONE Slack message per run (count and top users), no Dagster."""

from __future__ import annotations

from typing import Optional

import pandas as pd

TOP_USERS = 10


def format_high_churn(
    high: pd.DataFrame,
    *,
    week_start: str,
    as_of: str,
    threshold: float,
    run_url: Optional[str] = None,
    top: int = TOP_USERS,
) -> tuple[str, list[dict]]:
    """(text, blocks) for the users whose new S > ``threshold`` (``high`` sorted by S desc).

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
