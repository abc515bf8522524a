"""The automation table in docs/operations.md and the code cannot drift apart.

Every job, schedule and sensor of ``analytics_platform.definitions.defs`` (discovered
generically, so the test keeps up as domains add theirs) must have a row with the same
cron (schedules), interval (sensors), timezone (UTC for every schedule), target and default
status; a row without a definition in the code fails too.
"""

from __future__ import annotations

import re

import pytest

from analytics_platform_tests.ops import inventory
from analytics_platform_tests.ops.inventory import Entry, compare, parse_doc_table


@pytest.fixture(scope="module")
def code() -> list[Entry]:
    return inventory.code_entries()


@pytest.fixture(scope="module")
def doc_text() -> str:
    return inventory.OPERATIONS_DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def docs(doc_text: str) -> list[Entry]:
    return parse_doc_table(doc_text)


def test_every_schedule_runs_in_utc(code: list[Entry]) -> None:
    schedules = [e for e in code if e.kind == "schedule"]
    assert schedules, "the code location defines no schedule"
    assert {e.name: e.timezone for e in schedules if e.timezone != "UTC"} == {}


def test_every_docs_schedule_says_utc(docs: list[Entry]) -> None:
    assert {e.name: e.timezone for e in docs if e.kind == "schedule" and e.timezone != "UTC"} == {}


def test_docs_table_matches_the_code(code: list[Entry], docs: list[Entry]) -> None:
    problems = compare(code, docs)
    assert not problems, (
        "docs/operations.md's automation table and the code disagree:\n  "
        + "\n  ".join(problems)
        + "\n\nCode side, in the docs format:\n"
        + inventory.render_table(code)
    )


def test_every_job_schedule_and_sensor_is_listed(code: list[Entry], docs: list[Entry]) -> None:
    # Redundant with the comparison, but names the kinds explicitly.
    for kind in ("job", "schedule", "sensor"):
        in_code = {e.name for e in code if e.kind == kind}
        in_docs = {e.name for e in docs if e.kind == kind}
        assert in_code == in_docs, f"{kind}s: code {sorted(in_code)} vs docs {sorted(in_docs)}"


# ---------------------------------------------------------------------------------------
# The check really fails when the two disagree (mutations of the real doc text).
# ---------------------------------------------------------------------------------------
def _schedule_row(doc_text: str, name: str) -> str:
    for line in doc_text.splitlines():
        if line.startswith("|") and f"`{name}`" in line and "| schedule |" in line:
            return line
    raise AssertionError(f"no schedule row for {name} in docs/operations.md")


def test_a_changed_cron_in_the_docs_is_reported(code: list[Entry], doc_text: str) -> None:
    schedule = next(e for e in code if e.kind == "schedule")
    row = _schedule_row(doc_text, schedule.name)
    other = "17 4 * * 3" if schedule.cron != "17 4 * * 3" else "18 4 * * 3"
    mutated = doc_text.replace(row, row.replace(f"`{schedule.cron}`", f"`{other}`", 1))
    assert mutated != doc_text, f"cron `{schedule.cron}` not found in its docs row: {row}"
    problems = compare(code, parse_doc_table(mutated))
    assert any(schedule.name in p and "cron" in p and other in p for p in problems), problems


def test_a_changed_cron_in_the_code_is_reported(code: list[Entry], docs: list[Entry]) -> None:
    schedule = next(e for e in code if e.kind == "schedule")
    changed = [
        Entry(**{**e.__dict__, "cron": "*/7 * * * *"}) if e.ident == schedule.ident else e for e in code
    ]
    problems = compare(changed, docs)
    assert any(schedule.name in p and "*/7 * * * *" in p for p in problems), problems


def test_a_non_utc_timezone_is_reported(code: list[Entry], docs: list[Entry]) -> None:
    schedule = next(e for e in code if e.kind == "schedule")
    changed = [
        Entry(**{**e.__dict__, "timezone": "Europe/Berlin"}) if e.ident == schedule.ident else e for e in code
    ]
    problems = compare(changed, docs)
    assert any(schedule.name in p and "timezone" in p for p in problems), problems


def test_a_missing_or_extra_row_is_reported(code: list[Entry], doc_text: str) -> None:
    schedule = next(e for e in code if e.kind == "schedule")
    row = _schedule_row(doc_text, schedule.name)
    without = doc_text.replace(row + "\n", "")
    problems = compare(code, parse_doc_table(without))
    assert any("missing in docs" in p and schedule.name in p for p in problems), problems

    extra = row.replace(f"`{schedule.name}`", "`retired_schedule`")
    with_extra = doc_text.replace(row, row + "\n" + extra)
    problems = compare(code, parse_doc_table(with_extra))
    assert any("not in the code" in p and "retired_schedule" in p for p in problems), problems


def test_a_changed_sensor_interval_is_reported(code: list[Entry], doc_text: str) -> None:
    sensor = next(e for e in code if e.kind == "sensor")
    pattern = re.compile(rf"^(\| sensor \| `{re.escape(sensor.name)}` \| )every \d+ s", re.M)
    mutated, n = pattern.subn(r"\g<1>every 9999 s", doc_text)
    assert n == 1
    problems = compare(code, parse_doc_table(mutated))
    assert any(sensor.name in p and "9999" in p for p in problems), problems


def test_table_parser_rejects_a_malformed_table() -> None:
    with pytest.raises(ValueError, match="no .*automation-table"):
        parse_doc_table("# no table here")
    bad_header = f"{inventory.TABLE_START}\n| kind | name |\n|---|---|\n{inventory.TABLE_END}"
    with pytest.raises(ValueError, match="columns"):
        parse_doc_table(bad_header)
