"""FirestoreResource against the real Firestore emulator (and its local-export stand-in):
ordering, paging with ties, cursors, untimed documents, named apps per project, set-up
failures that name the variables."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from analytics_platform.resources.firestore import EventCursor, FirestoreResource, path_key
from analytics_platform.resources.local.firestore_export import LocalFirestore, write_local_export
from analytics_platform.settings import SettingsError
from analytics_platform_tests.engagement.conftest import emulator_resource

UTC = dt.timezone.utc
BASE = dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _doc(user: str, event: str, ts, **fields) -> dict:
    body = {"app_id": "com.fit.app", "foreground_time_ms": 1000, "session_id": "s1", "timestamp": ts}
    body.update(fields)
    return {"path": f"app_usage_events/{user}/events/{event}", "fields": body}


def _paths(pages) -> list[str]:
    return [d["path"] for p in pages for d in p.documents]


@pytest.fixture
def fs(firestore_emulator, firestore_project) -> FirestoreResource:
    return emulator_resource(firestore_emulator, firestore_project)


def test_reads_in_timestamp_then_path_order_across_pages_with_ties(fs):
    docs = [_doc(f"u{i % 3}", f"e{i}", BASE) for i in range(7)]  # 7 documents, one timestamp
    docs += [_doc("u9", "late", BASE + dt.timedelta(milliseconds=1)), _doc("u0", "early", BASE - dt.timedelta(seconds=1))]
    fs.write_documents(docs)
    pages = list(fs.iter_event_pages(page_size=2))
    paths = _paths(pages)
    assert len(paths) == len(set(paths)) == 9  # each document exactly once
    assert paths[0] == "app_usage_events/u0/events/early"
    assert paths[-1] == "app_usage_events/u9/events/late"
    ties = paths[1:-1]
    assert ties == sorted(ties, key=path_key)
    assert [len(p.documents) for p in pages] == [2, 2, 2, 2, 1]
    # every page's cursor is its last document; starting after it continues exactly there
    for i, page in enumerate(pages[:-1]):
        assert page.cursor.path == page.documents[-1]["path"]
        rest = _paths(fs.iter_event_pages(after=page.cursor, page_size=3))
        assert rest == paths[2 * (i + 1):]
    first = pages[0].documents[0]
    assert first["user_id"] == "u0" and first["event_id"] == "early"
    assert first["fields"]["timestamp"] == BASE - dt.timedelta(seconds=1)
    assert first["fields"]["timestamp"].tzinfo is not None


def test_one_collection_group_query_covers_all_users_and_skips_nothing_in_range(fs):
    fs.write_documents([_doc(f"user{i}", "e1", BASE + dt.timedelta(minutes=i)) for i in range(25)])
    paths = _paths(fs.iter_event_pages(page_size=10))
    assert len(paths) == 25
    until = BASE + dt.timedelta(minutes=10)
    assert len(_paths(fs.iter_event_pages(until=until))) == 10  # timestamp < until
    assert len(_paths(fs.iter_event_pages(since=until))) == 15  # timestamp >= since
    assert len(_paths(fs.iter_event_pages(max_documents=7, page_size=5))) == 7


def test_untimed_documents_are_counted_not_read(fs):
    fs.write_documents(
        [
            _doc("u1", "good", BASE),
            _doc("u1", "string_ts", "2024-06-01T12:00:00Z"),
            _doc("u1", "number_ts", 1717243200000),
            {"path": "app_usage_events/u1/events/no_ts", "fields": {"app_id": "a", "foreground_time_ms": 1, "session_id": "s"}},
            _doc("u1", "future", BASE + dt.timedelta(days=365)),
        ]
    )
    until = BASE + dt.timedelta(days=1)
    assert _paths(fs.iter_event_pages(until=until)) == ["app_usage_events/u1/events/good"]
    counts = fs.count_untimed_documents(until=until)
    assert counts.without_valid_timestamp == 3
    assert counts.future_dated == 1


def test_named_apps_keep_projects_apart(firestore_emulator, firestore_project):
    other_project = firestore_project + "-b"
    a = emulator_resource(firestore_emulator, firestore_project)
    b = emulator_resource(firestore_emulator, other_project)
    a.write_documents([_doc("u1", "only_in_a", BASE)])
    b.write_documents([_doc("u2", "only_in_b", BASE), _doc("u3", "also_b", BASE)])
    assert _paths(a.iter_event_pages()) == ["app_usage_events/u1/events/only_in_a"]
    assert len(_paths(b.iter_event_pages())) == 2
    assert a.source_name != b.source_name
    # a fresh resource object for the same project reuses the same firebase app
    assert _paths(emulator_resource(firestore_emulator, firestore_project).iter_event_pages()) == [
        "app_usage_events/u1/events/only_in_a"
    ]


def test_emulator_host_comes_from_the_resource_not_the_process(fs, monkeypatch):
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:1")  # a wrong host in the environment
    fs.write_documents([_doc("u1", "e1", BASE)])
    assert len(_paths(fs.iter_event_pages())) == 1
    import os

    assert os.environ["FIRESTORE_EMULATOR_HOST"] == "127.0.0.1:1"  # restored


def test_local_export_has_the_same_shape(tmp_path):
    path = tmp_path / "firestore" / "events.jsonl"
    write_local_export(path, [_doc("u1", "e2", BASE), _doc("u1", "e1", BASE), _doc("u2", "e0", BASE - dt.timedelta(hours=1))])
    with path.open("a") as fh:  # hand-written lines: ISO timestamps with offsets, a bad one, a flat one
        fh.write(json.dumps({"path": "app_usage_events/u3/events/e9", "fields": {"app_id": "a", "foreground_time_ms": 5, "session_id": "s", "timestamp": "2024-06-01T14:00:00+02:00"}}) + "\n")
        fh.write(json.dumps({"path": "app_usage_events/u3/events/bad", "fields": {"timestamp": "yesterday"}}) + "\n")
        fh.write(json.dumps({"path": "app_usage_events/u4/events/flat", "app_id": "a", "timestamp": "2024-06-02T00:00:00Z"}) + "\n")
        fh.write("not json\n")
    fs = LocalFirestore(local_export_path=str(path))
    assert fs.mode == "local_export"
    pages = list(fs.iter_event_pages(page_size=2))
    paths = _paths(pages)
    assert paths == [
        "app_usage_events/u2/events/e0",
        "app_usage_events/u1/events/e1",
        "app_usage_events/u1/events/e2",
        "app_usage_events/u3/events/e9",  # 14:00+02:00 == 12:00Z, path after u1/e2
        "app_usage_events/u4/events/flat",
    ]
    ts = pages[1].documents[1]["fields"]["timestamp"]
    assert ts == BASE + dt.timedelta(hours=0) and ts.utcoffset() == dt.timedelta(0)
    assert _paths(fs.iter_event_pages(after=EventCursor(BASE, "app_usage_events/u1/events/e2"))) == paths[3:]
    assert fs.count_untimed_documents().without_valid_timestamp == 2
    # a missing export is an error naming it, not "no documents" (which would give every user
    # zero events, silently)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        list(LocalFirestore(local_export_path=str(tmp_path / "missing.jsonl")).iter_event_pages())


def test_modes_and_setup_failures(tmp_path):
    assert LocalFirestore().mode == "local_export"
    assert FirestoreResource(emulator_host="127.0.0.1:8080").mode == "emulator"
    assert FirestoreResource(project_id="p").mode == "firebase"
    assert FirestoreResource(credentials_file="/x.json").mode == "firebase"

    with pytest.raises(SettingsError) as err:
        FirestoreResource().check_configured()  # the real client needs access settings
    for name in ("FIREBASE_PROJECT_ID", "FIREBASE_CREDENTIALS_FILE", "FIREBASE_SERVICE_ACCOUNT_JSON"):
        assert name in str(err.value)
    LocalFirestore().check_configured()  # local: the export is fine

    with pytest.raises(SettingsError, match="FIREBASE_CREDENTIALS_FILE"):
        FirestoreResource(credentials_file=str(tmp_path / "missing.json")).check_configured()

    secret = '{"type": "service_account", "private_key": "-----BEGIN' + "x" * 20
    with pytest.raises(SettingsError) as err:
        FirestoreResource(service_account_json=secret).check_configured()
    assert "FIREBASE_SERVICE_ACCOUNT_JSON" in str(err.value)
    assert "BEGIN" not in str(err.value)  # never the secret itself
    assert secret not in FirestoreResource(service_account_json=secret).describe()
