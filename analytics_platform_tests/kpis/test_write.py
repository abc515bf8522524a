"""Acceptance 3 and 4: the JSONB merge keeps every other key exactly, inserts missing week
rows, isolates invalid users, commits once, writes nothing on dry run, and loses no
concurrent update of another key (real PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time

import pytest
import sqlalchemy as sa

from analytics_platform.kpis.store import recalculate

from .conftest import WEEK, days_before, params

# Exact-text keys: a high-precision number (JSONB numeric, more digits than a float holds),
# nested structures, null, unicode.
OTHER_KEYS = (
    '{"I_t": 0.12345678901234567890123456789, "E_t": 12, "R_t": null, '
    '"A_t": {"nested": [1, "x", true, {"deep": -0.0}]}, "note": "ünïcødé \\"quoted\\"", '
    '"P": 0.5, "S": 0.25}'
)


def other_keys_text(db, user: str, week: dt.date = WEEK) -> str:
    with db.engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT CAST(kpis - 'P' - 'S' AS text) FROM weekly_kpi WHERE user_id = :u AND week_start = :w"),
            {"u": user, "w": week},
        ).scalar()


def snapshot(db) -> list[tuple]:
    with db.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text("SELECT user_id, week_start, CAST(kpis AS text), updated_at FROM weekly_kpi ORDER BY 1, 2")
            )
        ]


def seed_row(db, user: str, raw_json: str = OTHER_KEYS, week: dt.date = WEEK) -> None:
    db.run(
        "INSERT INTO weekly_kpi (user_id, week_start, kpis, updated_at) VALUES (:u, :w, CAST(:k AS jsonb), :t)",
        [{"u": user, "w": week, "k": raw_json, "t": dt.datetime(2024, 6, 3, 1, tzinfo=dt.timezone.utc)}],
    )


def test_other_keys_preserved_exactly_and_p_s_replaced(kpi_db):
    kpi_db.exams("u1", [80.0], at=days_before(10))
    seed_row(kpi_db, "u1")
    before = other_keys_text(kpi_db, "u1")
    result = recalculate(kpi_db.engine, params())
    assert (result.inserted, result.updated) == (0, 1)
    assert other_keys_text(kpi_db, "u1") == before
    assert "0.12345678901234567890123456789" in before
    kpis = kpi_db.kpis("u1")
    assert kpis["P"] != 0.5 and kpis["S"] != 0.25
    assert set(kpis) == {"I_t", "E_t", "R_t", "A_t", "note", "P", "S"}


def test_missing_week_row_is_inserted_with_only_p_and_s(kpi_db):
    kpi_db.exams("u1", [80.0], at=days_before(10))
    previous_week = WEEK - dt.timedelta(days=7)
    seed_row(kpi_db, "u1", week=previous_week)  # another week's row: untouched
    before_previous = snapshot(kpi_db)
    result = recalculate(kpi_db.engine, params())
    assert (result.inserted, result.updated) == (1, 0)
    assert set(kpi_db.kpis("u1")) == {"P", "S"}
    assert [r for r in snapshot(kpi_db) if r[1] == previous_week] == before_previous


def test_week_start_is_monday_of_as_of_utc_date(kpi_db):
    kpi_db.attempt("u1", dt.datetime(2024, 5, 20, tzinfo=dt.timezone.utc))
    # Monday 01:00 at +09:00 is Sunday 16:00 UTC: the week of Monday 2024-06-03
    as_of = dt.datetime(2024, 6, 10, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    result = recalculate(kpi_db.engine, params(as_of=as_of))
    assert result.week_start == dt.date(2024, 6, 3)
    assert kpi_db.kpis("u1", dt.date(2024, 6, 3)) is not None
    # Sunday 23:59:59 UTC still belongs to the week that started on Monday 2024-06-03
    assert params(as_of=dt.datetime(2024, 6, 9, 23, 59, 59, tzinfo=dt.timezone.utc)).week_start == dt.date(2024, 6, 3)
    assert params(as_of=dt.datetime(2024, 6, 10, 0, 0, tzinfo=dt.timezone.utc)).week_start == dt.date(2024, 6, 10)


@pytest.mark.parametrize("bad_score", [float("nan"), 100.5, -0.1, float("inf")])
def test_invalid_score_fails_only_that_user(kpi_db, log, bad_score):
    kpi_db.exams("bad", [70.0, bad_score], at=days_before(10))
    kpi_db.exams("good", [70.0], at=days_before(10))
    seed_row(kpi_db, "bad")
    bad_before = snapshot(kpi_db)
    result = recalculate(kpi_db.engine, params(), log=log)
    assert (result.processed, result.failed) == (1, 1)
    assert snapshot(kpi_db)[0] == bad_before[0]  # the failed user's row is untouched
    assert set(kpi_db.kpis("good")) == {"P", "S"}
    errors = log.messages("error")
    assert len(errors) == 1 and "user=bad error=" in errors[0]  # one line, naming the user and the reason
    assert re.fullmatch(r"Summary: processed=1, failed=1, threshold=7 days, duration_ms=\d+", log.messages("info")[-1])


def test_boundary_scores_are_valid(kpi_db):
    kpi_db.exams("edge", [0.0, 100.0], at=days_before(10))
    result = recalculate(kpi_db.engine, params())
    assert result.failed == 0 and set(kpi_db.kpis("edge")) == {"P", "S"}


def test_dry_run_writes_nothing_and_reports_old_to_new(kpi_db, log):
    kpi_db.exams("u1", [80.0], at=days_before(10))
    kpi_db.exams("u2", [60.0], at=days_before(12))
    seed_row(kpi_db, "u1")
    before = snapshot(kpi_db)
    result = recalculate(kpi_db.engine, params(dry_run=True), log=log)
    assert snapshot(kpi_db) == before
    assert kpi_db.table("weekly_kpi_recalc_runs") == []
    assert result.written_at is None
    assert (result.inserted, result.updated) == (1, 1)  # would insert u2, would update u1
    sample = {r["user_id"]: r for r in result.sample()}
    assert sample["u1"]["P_old"] == 0.5 and sample["u1"]["S_old"] == 0.25
    assert sample["u2"]["P_old"] is None
    assert sample["u1"]["P_new"] == pytest.approx(result.users.set_index("user_id").loc["u1", "P"])
    assert any("dry_run=True" in m for m in log.messages("info"))


def test_dry_run_does_not_create_missing_weekly_kpi(bare_db):
    bare_db.create_sources(weekly_kpi=False)
    bare_db.attempt("u1", days_before(8))
    result = recalculate(bare_db.engine, params(dry_run=True))
    assert result.inserted == 1
    assert not bare_db.exists("weekly_kpi")


def test_missing_weekly_kpi_is_created_on_a_real_run(bare_db):
    bare_db.create_sources(weekly_kpi=False)
    bare_db.attempt("u1", days_before(8))
    result = recalculate(bare_db.engine, params())
    assert result.created_weekly_kpi
    assert set(bare_db.kpis("u1")) == {"S"}


def test_no_inactive_users_message(kpi_db, log):
    kpi_db.attempt("active", days_before(1))
    result = recalculate(kpi_db.engine, params(threshold_days=5), log=log)
    assert result.inactive == 0 and result.written_at is None
    assert "No inactive users found (threshold=5 days)" in log.messages("info")
    assert not any(m.startswith("Summary:") for m in log.messages())


def test_rerun_is_idempotent(kpi_db):
    kpi_db.exams("u1", [80.0, 55.0], at=days_before(10))
    seed_row(kpi_db, "u1")
    kpi_db.attempt("u2", days_before(9))
    recalculate(kpi_db.engine, params())
    first = [(r[0], r[1], r[2]) for r in snapshot(kpi_db)]
    recalculate(kpi_db.engine, params())
    assert [(r[0], r[1], r[2]) for r in snapshot(kpi_db)] == first


def test_all_writes_commit_together(kpi_db):
    """A failure in the write statement rolls back every user's write (one transaction)."""
    kpi_db.attempt("u1", days_before(8))
    kpi_db.attempt("u2", days_before(9))
    kpi_db.run("CREATE FUNCTION reject_u2() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
               "IF NEW.user_id = 'u2' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$")
    kpi_db.run("CREATE TRIGGER reject_u2 BEFORE INSERT ON weekly_kpi FOR EACH ROW EXECUTE FUNCTION reject_u2()")
    with pytest.raises(sa.exc.DBAPIError, match="boom"):
        recalculate(kpi_db.engine, params())
    assert snapshot(kpi_db) == []
    assert kpi_db.table("weekly_kpi_recalc_runs") == []  # written in the same transaction: rolled back too


# ----------------------------------------------------------------------------------------
# Acceptance 4: concurrent writers
# ----------------------------------------------------------------------------------------
def _set_e_t(conn: sa.Connection, user: str, value: float) -> None:
    conn.execute(
        sa.text(
            "UPDATE weekly_kpi SET kpis = jsonb_set(kpis, '{E_t}', to_jsonb(CAST(:v AS float8))), "
            "updated_at = clock_timestamp() WHERE user_id = :u AND week_start = :w"
        ),
        {"u": user, "v": value, "w": WEEK},
    )


def test_concurrent_update_between_read_and_write_is_kept(kpi_db):
    """Another writer commits E_t after the run has read everything and before it writes."""
    kpi_db.exams("u1", [80.0], at=days_before(10))
    seed_row(kpi_db, "u1")
    calls = []

    def concurrent_writer() -> None:
        with kpi_db.engine.connect() as other:  # a second connection, its own transaction
            with other.begin():
                _set_e_t(other, "u1", 99.5)
        calls.append("wrote")

    result = recalculate(kpi_db.engine, params(), before_write=concurrent_writer)
    assert calls == ["wrote"] and result.updated == 1
    kpis = kpi_db.kpis("u1")
    assert kpis["E_t"] == 99.5  # not lost
    assert kpis["P"] == pytest.approx(result.users.set_index("user_id").loc["u1", "P"], abs=0)
    assert kpis["I_t"] == pytest.approx(0.123456789012345678)


def test_concurrent_writer_holding_the_row_lock(kpi_db):
    """The writer has updated E_t but not committed when the run writes: the run waits for
    the row lock and merges into the committed version."""
    kpi_db.exams("u1", [80.0], at=days_before(10))
    kpi_db.exams("u2", [90.0], at=days_before(11))
    seed_row(kpi_db, "u1")
    outcome: dict = {}

    with kpi_db.engine.connect() as other:
        txn = other.begin()
        _set_e_t(other, "u1", 7.25)  # holds the row lock, uncommitted
        writer_pid = other.exec_driver_sql("SELECT pg_backend_pid()").scalar()

        def run() -> None:
            try:
                outcome["result"] = recalculate(kpi_db.engine, params())
            except BaseException as exc:  # noqa: BLE001 - surfaced below
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 60
        blocked = False
        with kpi_db.engine.connect() as probe:
            while time.monotonic() < deadline and not blocked:
                blocked = bool(
                    probe.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND :pid = ANY(pg_blocking_pids(pid))"
                        ),
                        {"pid": writer_pid},
                    ).scalar()
                )
                # pg_stat_activity is a snapshot per transaction: end it so the next poll sees news.
                probe.rollback()
                if not blocked:
                    time.sleep(0.02)
        assert blocked, "the run never waited for the concurrent writer's row lock"
        assert "result" not in outcome  # still waiting
        txn.commit()
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    kpis = kpi_db.kpis("u1")
    assert kpis["E_t"] == 7.25
    assert kpis["P"] == pytest.approx(outcome["result"].users.set_index("user_id").loc["u1", "P"], abs=0)
    assert set(kpi_db.kpis("u2")) == {"P", "S"}
