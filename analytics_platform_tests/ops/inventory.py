"""Every job, schedule and sensor of the code location, and the table in docs/operations.md.

The code side is discovered generically from ``analytics_platform.definitions.defs`` (so it
keeps working as domains land); the docs side is the markdown table between the markers
``<!-- automation-table:start -->`` and ``<!-- automation-table:end -->`` with the columns

    | kind | name | cron / interval | timezone | target | default | purpose |

* ``kind``: ``job``, ``schedule`` or ``sensor``;
* ``cron / interval``: a schedule's cron string, ``every N s`` for a sensor, ``—`` for a job;
* ``timezone``: ``UTC`` for a schedule, ``—`` otherwise;
* ``target``: the job a schedule or sensor starts; the asset keys a job (or the automation
  sensor) materializes, comma-separated; free text for a run-status sensor;
* ``default``: ``running`` / ``stopped`` (the status a fresh deployment starts with), ``—``
  for a job.

``compare`` returns every disagreement as a readable line (empty list = in sync).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATIONS_DOC = REPO_ROOT / "docs" / "operations.md"
TABLE_START = "<!-- automation-table:start -->"
TABLE_END = "<!-- automation-table:end -->"
COLUMNS = ("kind", "name", "cron / interval", "timezone", "target", "default", "purpose")
NONE = "—"
_NONE_TOKENS = {"", "-", "—", "n/a"}


@dataclass(frozen=True)
class Entry:
    kind: str  # job | schedule | sensor
    name: str
    cron: str  # cron string, "every N s", or "—"
    timezone: str  # "UTC" for schedules, "—" otherwise
    target: str  # job name, or comma-separated sorted asset keys, or free text
    default: str  # running | stopped | —
    purpose: str = ""
    target_is_text: bool = False  # free text (run-status sensors): not compared

    @property
    def ident(self) -> tuple[str, str]:
        return (self.kind, self.name)


def _keys(keys: Iterable) -> str:
    return ", ".join(sorted(k.to_user_string() for k in keys))


def _status(status) -> str:
    return "running" if getattr(status, "value", str(status)).upper().endswith("RUNNING") else "stopped"


def code_entries(defs=None) -> list[Entry]:
    """Jobs, schedules and sensors of the code location as :class:`Entry` rows."""
    if defs is None:
        from analytics_platform.definitions import defs as loaded

        defs = loaded
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    entries: list[Entry] = []
    for job in repo.get_all_jobs():
        if job.name.startswith("__"):  # Dagster's implicit asset job
            continue
        keys = job.asset_layer.executable_asset_keys if job.asset_layer else []
        entries.append(Entry("job", job.name, NONE, NONE, _keys(keys), NONE, job.description or ""))
    for schedule in repo.schedule_defs:
        entries.append(
            Entry(
                "schedule",
                schedule.name,
                " ".join(str(schedule.cron_schedule).split()),
                schedule.execution_timezone or NONE,
                schedule.job_name,
                _status(schedule.default_status),
                schedule.description or "",
            )
        )
    for sensor in repo.sensor_defs:
        jobs = sorted({t.job_name for t in getattr(sensor, "targets", []) or []})
        sensor_type = str(getattr(sensor, "sensor_type", "")).upper()
        if jobs:
            target, text = ", ".join(jobs), False
        elif "AUTOMATION" in sensor_type or "AUTO_MATERIALIZE" in sensor_type:
            selected = sensor.asset_selection.resolve(graph) if sensor.asset_selection else set()
            auto = [k for k in selected if graph.get(k).automation_condition is not None]
            target, text = _keys(auto), False
        else:
            target, text = "", True
        entries.append(
            Entry(
                "sensor",
                sensor.name,
                f"every {sensor.minimum_interval_seconds} s",
                NONE,
                target,
                _status(sensor.default_status),
                sensor.description or "",
                target_is_text=text,
            )
        )
    return entries


# ----------------------------------------------------------------------------------------
# the docs side
# ----------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    text = text.strip().replace("`", "").replace("\\|", "|")
    return NONE if text.lower() in _NONE_TOKENS else " ".join(text.split())


def _norm_interval(text: str) -> str:
    m = re.fullmatch(r"every\s*(\d+)\s*(s|sec|secs|seconds?)", text.strip(), flags=re.I)
    return f"every {int(m.group(1))} s" if m else text


def _norm_target(text: str) -> str:
    if text == NONE:
        return ""
    return ", ".join(sorted(p.strip() for p in text.split(",") if p.strip()))


def parse_doc_table(markdown: str) -> list[Entry]:
    """The rows of the automation table in ``markdown`` (raises if the table is missing)."""
    if TABLE_START not in markdown or TABLE_END not in markdown:
        raise ValueError(f"docs/operations.md has no {TABLE_START} … {TABLE_END} table")
    body = markdown.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    rows = [line.strip() for line in body.splitlines() if line.strip().startswith("|")]
    if len(rows) < 2:
        raise ValueError("the automation table has no header or no rows")
    header = [_cell(c).lower() for c in _split_row(rows[0])]
    if tuple(header) != COLUMNS:
        raise ValueError(f"automation table columns are {header}, expected {list(COLUMNS)}")
    entries = []
    for row in rows[2:]:  # rows[1] is the |---| separator
        cells = [_cell(c) for c in _split_row(row)]
        if len(cells) != len(COLUMNS):
            raise ValueError(f"automation table row has {len(cells)} cells, expected {len(COLUMNS)}: {row}")
        kind, name, cron, tz, target, default, purpose = cells
        kind = kind.lower()
        entries.append(
            Entry(
                kind=kind,
                name=name,
                cron=_norm_interval(cron) if kind == "sensor" else cron,
                timezone=tz,
                target=target,
                default=default.lower(),
                purpose=purpose if purpose != NONE else "",
            )
        )
    return entries


def _split_row(row: str) -> list[str]:
    inner = row.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") else inner
    return re.split(r"(?<!\\)\|", inner)


def doc_entries(path: Path = OPERATIONS_DOC) -> list[Entry]:
    return parse_doc_table(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------
# comparison
# ----------------------------------------------------------------------------------------
def compare(code: list[Entry], docs: list[Entry]) -> list[str]:
    """Every disagreement between code and docs (both directions), as readable lines."""
    problems: list[str] = []
    by_code = {e.ident: e for e in code}
    by_doc: dict[tuple[str, str], Entry] = {}
    for e in docs:
        if e.kind not in ("job", "schedule", "sensor"):
            problems.append(f"docs: row {e.name!r} has unknown kind {e.kind!r}")
            continue
        if e.ident in by_doc:
            problems.append(f"docs: {e.kind} {e.name!r} is listed twice")
        by_doc[e.ident] = e
    for ident in sorted(set(by_code) - set(by_doc)):
        c = by_code[ident]
        problems.append(
            f"missing in docs/operations.md: {c.kind} {c.name!r} (cron/interval {c.cron!r}, target {c.target!r})"
        )
    for ident in sorted(set(by_doc) - set(by_code)):
        problems.append(f"in docs/operations.md but not in the code: {ident[0]} {ident[1]!r}")
    for ident in sorted(set(by_code) & set(by_doc)):
        c, d = by_code[ident], by_doc[ident]
        label = f"{c.kind} {c.name!r}"
        if c.cron != d.cron:
            problems.append(f"{label}: cron/interval in code {c.cron!r} != docs {d.cron!r}")
        if c.timezone != d.timezone:
            problems.append(f"{label}: timezone in code {c.timezone!r} != docs {d.timezone!r}")
        if not c.target_is_text and _norm_target(c.target) != _norm_target(d.target):
            problems.append(f"{label}: target in code {c.target!r} != docs {d.target!r}")
        if c.default != d.default:
            problems.append(f"{label}: default status in code {c.default!r} != docs {d.default!r}")
        if not d.purpose:
            problems.append(f"{label}: docs give no purpose")
    return problems


def render_table(entries: list[Entry], purposes: Optional[dict[tuple[str, str], str]] = None) -> str:
    """A table in the docs format (used to draft docs/operations.md; purposes from the code)."""
    order = {"schedule": 0, "sensor": 1, "job": 2}
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for e in sorted(entries, key=lambda e: (order[e.kind], e.name)):
        purpose = (purposes or {}).get(e.ident) or e.purpose.replace("\n", " ")
        target = e.target if e.target else NONE
        code = lambda s: NONE if s == NONE else f"`{s}`"  # noqa: E731
        tgt = ", ".join(f"`{t.strip()}`" for t in target.split(",")) if target != NONE and not e.target_is_text else target
        lines.append(
            f"| {e.kind} | `{e.name}` | {code(e.cron) if e.kind == 'schedule' else e.cron} | {e.timezone} | "
            f"{tgt} | {e.default} | {purpose} |"
        )
    return "\n".join(lines)
