"""MixpanelResource over real HTTP against the Mixpanel stub (issue 2, acceptance 4)."""

from __future__ import annotations

import json
import logging
import threading
import time
import tracemalloc

import dagster as dg
import orjson
import psutil
import pytest

from analytics_platform.resources.local.mixpanel_files import LocalMixpanel
from analytics_platform.resources.mixpanel import (
    TOKEN_PLACEHOLDER,
    MixpanelAuthError,
    MixpanelError,
    MixpanelResource,
    build_set_update,
    build_unset_update,
)
from analytics_platform.settings import SettingsError, get_settings
from analytics_platform_tests.stubs.mixpanel import MixpanelStub, write_export_file

DAY = "2024-05-01"


def _event(name: str, t: int, distinct_id: str = "u1", **props) -> dict:
    return {"event": name, "properties": {"time": t, "distinct_id": distinct_id, **props}}


def _lines(path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line]


def _all_logs(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def _secrets(stub: MixpanelStub) -> list[str]:
    return [stub.service_account[1], stub.api_secret, stub.project_token]


# --------------------------------------------------------------------------- export


def test_export_streams_requested_events_with_service_account(mixpanel_stub, tmp_path):
    mixpanel_stub.add_events(
        DAY, [_event("a", 1714521600, **{"$insert_id": "x1"}), _event("b", 1714521601), _event("a", 1714521602_000)]
    )
    mixpanel_stub.add_events("2024-05-02", [_event("a", 1714608000)])
    mp = MixpanelResource(**mixpanel_stub.resource_kwargs())

    stats = mp.export_to_file(DAY, "2024-05-02", ["a"], dest=tmp_path / "out.jsonl")

    lines = [orjson.loads(line) for line in _lines(stats.path)]
    assert [e["event"] for e in lines] == ["a", "a", "a"]
    assert stats.lines == 3 and stats.source == "http" and stats.requests == 1
    (request,) = mixpanel_stub.export_requests
    assert request["auth"] == "service_account" and request["auth_ok"]
    assert request["accept_gzip"]
    assert request["params"] == {
        "from_date": DAY,
        "to_date": "2024-05-02",
        "event": '["a"]',
        "project_id": mixpanel_stub.project_id,
    }
    assert not (tmp_path / "out.jsonl.part").exists()


def test_export_with_legacy_secret_and_iter_lines(mixpanel_stub):
    mixpanel_stub.add_events(DAY, [_event("a", 1714521600), _event("b", 1714521601)])
    mixpanel_stub.add_raw_lines(DAY, ['{"event": "a", "properties": {"time": 1714521602', "not json at all"])
    mp = MixpanelResource(**mixpanel_stub.resource_kwargs("legacy"))

    lines = list(mp.iter_export_lines(DAY, DAY))

    assert len(lines) == 4  # malformed lines are passed on for the loader to quarantine
    assert mixpanel_stub.export_requests[0]["auth"] == "legacy"


def test_429_with_retry_after_is_honoured_then_succeeds(mixpanel_stub, tmp_path, caplog):
    mixpanel_stub.add_events(DAY, [_event("a", 1714521600)])
    mixpanel_stub.fail_export(429, retry_after=1)
    mp = MixpanelResource(**mixpanel_stub.resource_kwargs())

    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        stats = mp.export_to_file(DAY, DAY, ["a"], dest=tmp_path / "out.jsonl")

    assert time.monotonic() - started >= 1.0  # waited Retry-After, not the 0.05 s backoff
    assert stats.requests == 2 and stats.lines == 1 and stats.waited_seconds >= 1.0
    assert [r["status"] for r in mixpanel_stub.export_requests] == [429, 200]
    assert "HTTP 429" in _all_logs(caplog)
    assert mp.requests_made == 2


def test_retry_after_as_http_date(mixpanel_stub, tmp_path):
    from email.utils import formatdate

    mixpanel_stub.add_events(DAY, [_event("a", 1714521600)])
    mixpanel_stub.fail_export(503, retry_after=formatdate(time.time() + 1, usegmt=True))
    mp = MixpanelResource(**mixpanel_stub.resource_kwargs())

    stats = mp.export_to_file(DAY, DAY, ["a"], dest=tmp_path / "out.jsonl")

    assert stats.requests == 2 and stats.lines == 1


def test_500_is_retried_with_backoff(mixpanel_stub, tmp_path, caplog):
    mixpanel_stub.add_events(DAY, [_event("a", 1714521600)])
    mixpanel_stub.fail_export(500, times=3)
    mp = MixpanelResource(**mixpanel_stub.resource_kwargs())

    with caplog.at_level(logging.WARNING):
        stats = mp.export_to_file(DAY, DAY, ["a"], dest=tmp_path / "out.jsonl")

    assert stats.requests == 4 and stats.lines == 1
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 3 and all("HTTP 500" in m for m in retries)
    times = [r["time"] for r in mixpanel_stub.export_requests]
    assert times == sorted(times)


def test_5xx_gives_up_after_max_attempts(mixpanel_stub, tmp_path):
    mixpanel_stub.fail_export(502, times=10)
    mp = MixpanelResource(**{**mixpanel_stub.resource_kwargs(), "max_attempts": 3})

    with pytest.raises(MixpanelError, match="after 3 attempts"):
        mp.export_to_file(DAY, DAY, ["a"], dest=tmp_path / "out.jsonl")
    assert len(mixpanel_stub.export_requests) == 3
    assert not (tmp_path / "out.jsonl").exists()


def test_other_4xx_is_not_retried(mixpanel_stub, tmp_path):
    mixpanel_stub.fail_export(400, body=b'{"error": "bad where expression"}')
    mp = MixpanelResource(**mixpanel_stub.resource_kwargs())

    with pytest.raises(MixpanelError, match="HTTP 400.*bad where expression"):
        mp.export_to_file(DAY, DAY, ["a"], where="bad(", dest=tmp_path / "out.jsonl")
    assert len(mixpanel_stub.export_requests) == 1


@pytest.mark.parametrize("auth", ["service_account", "legacy"])
def test_401_fails_at_once_naming_the_variable_without_secret(mixpanel_stub, tmp_path, caplog, auth):
    kwargs = mixpanel_stub.resource_kwargs(auth)
    wrong = "wrong-secret-do-not-leak-9931"
    if auth == "service_account":
        kwargs["service_account_secret"] = wrong
        expected = "MIXPANEL_SERVICE_ACCOUNT_SECRET"
    else:
        kwargs["api_secret"] = wrong  # the stub echoes the (legacy secret) user name back
        expected = "MIXPANEL_API_SECRET"
    mp = MixpanelResource(**kwargs)

    with caplog.at_level(logging.DEBUG), pytest.raises(MixpanelAuthError) as raised:
        mp.export_to_file(DAY, DAY, ["a"], dest=tmp_path / "out.jsonl")

    message = str(raised.value)
    assert expected in message and "401" in message
    assert len(mixpanel_stub.export_requests) == 1  # never retried
    everything = message + _all_logs(caplog) + repr(raised.value.__cause__)
    for secret in [wrong, *_secrets(mixpanel_stub)]:
        assert secret not in everything


def test_connection_reset_mid_stream_restarts_and_file_is_complete(mixpanel_stub, tmp_path):
    mixpanel_stub.add_generated(DAY, 20_000, event="a")
    mixpanel_stub.reset_export_after(7_000)
    mixpanel_stub.reset_export_after(13_000)
    mp = MixpanelResource(**mixpanel_stub.resource_kwargs())

    stats = mp.export_to_file(DAY, DAY, ["a"], dest=tmp_path / "out.jsonl")

    seqs = [orjson.loads(line)["properties"]["seq"] for line in _lines(stats.path)]
    assert seqs == list(range(20_000))  # complete, in order, no duplicate from the broken tries
    assert stats.requests == 3 and stats.lines == 20_000
    assert [r.get("reset", False) for r in mixpanel_stub.export_requests] == [True, True, False]


def test_connection_refused_is_retried_then_raises_redacted(tmp_path):
    with MixpanelStub() as stub:
        kwargs = stub.resource_kwargs()
    # the server is stopped: every connection is refused
    mp = MixpanelResource(**{**kwargs, "max_attempts": 2})
    with pytest.raises(MixpanelError, match="after 2 attempts: connection error") as raised:
        mp.export_to_file(DAY, DAY, ["a"], dest=tmp_path / "out.jsonl")
    assert kwargs["service_account_secret"] not in str(raised.value)


def test_one_million_lines_stream_with_flat_memory(mixpanel_stub, tmp_path):
    source = write_export_file(tmp_path / "source.jsonl", DAY, 1_000_000, event="big", ms=True)
    mixpanel_stub.add_file(DAY, source, events=["big"])
    mp = MixpanelResource(**mixpanel_stub.resource_kwargs())

    process = psutil.Process()
    baseline_rss = process.memory_info().rss
    peak_rss = [baseline_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak_rss[0] = max(peak_rss[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    try:
        stats = mp.export_to_file(DAY, DAY, ["big"], dest=tmp_path / "out.jsonl")
        _, peak_traced = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        done.set()
        sampler.join()

    assert stats.lines == 1_000_000
    assert stats.bytes == source.stat().st_size == (tmp_path / "out.jsonl").stat().st_size
    assert mixpanel_stub.export_requests[0]["accept_gzip"]  # streamed compressed
    assert peak_traced < 50 * 2**20, f"peak Python allocations {peak_traced / 2**20:.1f} MiB"
    assert peak_rss[0] - baseline_rss < 50 * 2**20, f"RSS grew {(peak_rss[0] - baseline_rss) / 2**20:.1f} MiB"


def test_export_without_credentials_to_overridden_url_uses_http_without_auth(tmp_path):
    with MixpanelStub(require_auth=False) as stub:
        stub.add_events(DAY, [_event("a", 1714521600)])
        mp = MixpanelResource(export_url=stub.url, api_url=stub.url)
        assert mp.export_mode == "anonymous_http"
        stats = mp.export_to_file(DAY, DAY, ["a"], dest=tmp_path / "out.jsonl")
        assert stats.lines == 1 and stub.export_requests[0]["auth"] == "anonymous"


def test_export_from_a_stub_without_token_sends_profile_updates_to_the_outbox(tmp_path, app_db_url, monkeypatch):
    """build_resources: HTTP export (the URL is not Mixpanel's) + /engage to the outbox."""
    from analytics_platform.resources import build_resources

    with MixpanelStub(require_auth=False) as stub:
        stub.add_events(DAY, [_event("a", 1714521600)])
        monkeypatch.setenv("APP_DATABASE_URL", app_db_url)  # the export budget's ledger (an EnvVar)
        env = {"MIXPANEL_EXPORT_URL": stub.url, "ANALYTICS_DATA_DIR": str(tmp_path), "APP_DATABASE_URL": app_db_url}
        resource = build_resources(get_settings(env))["mixpanel"]
        with dg.build_resources({"mixpanel": resource}) as built:
            mp = built.mixpanel
            assert (mp.export_mode, mp.engage_mode) == ("anonymous_http", "outbox")
            assert mp.export_to_file(DAY, DAY, ["a"], dest=tmp_path / "out.jsonl").lines == 1
            result = mp.engage([mp.set_update("u1", {"m": 1})])
    assert result.ok and result.destination == "outbox" and stub.engage_requests == []
    (row,) = [json.loads(line) for line in (tmp_path / "outbox" / "mixpanel_engage.jsonl").read_text().splitlines()]
    assert row["$token"] == TOKEN_PLACEHOLDER and mp.requests_made == 1


# ------------------------------------------------------------------ local fallback


def test_local_files_fallback_filters_dates_and_events(tmp_path):
    folder = tmp_path / "mixpanel_export"
    folder.mkdir()
    (folder / "2024-04-30.jsonl").write_text(json.dumps(_event("a", 1714435200)) + "\n")
    (folder / "2024-05-01.jsonl").write_text(
        "\n".join([json.dumps(_event("a", 1714521600)), json.dumps(_event("b", 1714521601)), "{broken", ""])
    )
    (folder / "2024-05-02.jsonl").write_text(json.dumps(_event("a", 1714608000)))  # no final newline
    mp = LocalMixpanel(local_dir=str(tmp_path))
    assert mp.export_mode == "local_files"

    stats = mp.export_to_file(DAY, "2024-05-02", ["a"], dest=tmp_path / "out" / "x.jsonl")

    lines = _lines(stats.path)
    assert stats.source == "local" and stats.requests == 0 and stats.lines == 3
    assert lines[1] == b"{broken"  # kept for the loader to count and quarantine
    assert [orjson.loads(line)["properties"]["time"] for line in (lines[0], lines[2])] == [1714521600, 1714608000]


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    "region, export_host, api_host",
    [
        ("us", "https://data.mixpanel.com", "https://api.mixpanel.com"),
        ("eu", "https://data-eu.mixpanel.com", "https://api-eu.mixpanel.com"),
        ("in", "https://data-in.mixpanel.com", "https://api-in.mixpanel.com"),
    ],
)
def test_region_picks_hosts(region, export_host, api_host):
    s = get_settings({"MIXPANEL_REGION": region})
    mp = MixpanelResource(export_url=s.mixpanel_export_url, api_url=s.mixpanel_api_url, api_secret="x" * 8)
    assert mp.export_endpoint == f"{export_host}/api/2.0/export"
    assert mp.engage_endpoint == f"{api_host}/engage"


def test_url_override_wins_over_region(mixpanel_stub):
    s = get_settings({"MIXPANEL_REGION": "eu", **mixpanel_stub.env()})
    assert s.mixpanel_export_url == mixpanel_stub.url and s.mixpanel_api_url == mixpanel_stub.url


def test_prod_without_credentials_fails_at_setup_naming_variables():
    resource = MixpanelResource(
        export_url="https://data.mixpanel.com", api_url="https://api.mixpanel.com", require_credentials=True
    )
    with pytest.raises(Exception) as raised:
        with dg.build_resources({"mixpanel": resource}):
            pass
    text = str(raised.value) + str(raised.value.__cause__)
    for name in ("MIXPANEL_SERVICE_ACCOUNT_USERNAME", "MIXPANEL_API_SECRET", "MIXPANEL_PROJECT_TOKEN"):
        assert name in text


def test_half_configured_service_account_is_rejected():
    mp = MixpanelResource(
        export_url="https://data.mixpanel.com", api_url="https://api.mixpanel.com", service_account_username="sa"
    )
    with pytest.raises(SettingsError, match="MIXPANEL_SERVICE_ACCOUNT_SECRET"):
        mp.check_configuration()


# ------------------------------------------------------------------------- engage


def test_engage_success_updates_profiles(mixpanel_stub):
    mp = MixpanelResource(**mixpanel_stub.resource_kwargs())
    updates = [mp.set_update(f"u{i}", {"marker": "v1"}) for i in range(3)] + [mp.unset_update("u0", ["marker"])]

    result = mp.engage(updates)

    assert result.ok and result.updates == 4 and result.requests == 1 and result.destination == "http"
    (request,) = mixpanel_stub.engage_requests
    assert request["content_type"].startswith("application/json")
    assert mixpanel_stub.profiles == {"u0": {}, "u1": {"marker": "v1"}, "u2": {"marker": "v1"}}


def test_engage_rejected_batch_is_a_failed_result(mixpanel_stub):
    mixpanel_stub.reject_engage("some data points in the request failed validation")
    mp = MixpanelResource(**mixpanel_stub.resource_kwargs())

    result = mp.engage([mp.set_update("u1", {"m": 1})])

    assert not result.ok and "failed validation" in result.error and result.requests == 1
    assert mixpanel_stub.profiles == {}


def test_engage_retries_429_and_5xx(mixpanel_stub):
    mixpanel_stub.fail_engage(429, retry_after=1)
    mixpanel_stub.fail_engage(503)
    mp = MixpanelResource(**mixpanel_stub.resource_kwargs())

    result = mp.engage([mp.set_update("u1", {"m": 1})])

    assert result.ok and result.requests == 3
    assert mixpanel_stub.profiles == {"u1": {"m": 1}}


def test_engage_other_4xx_is_a_failed_result_without_retry(mixpanel_stub):
    mixpanel_stub.fail_engage(400, body=b'{"error": "bad request"}')
    mp = MixpanelResource(**mixpanel_stub.resource_kwargs())

    result = mp.engage([mp.set_update("u1", {"m": 1})])

    assert not result.ok and result.status_code == 400 and result.requests == 1


def test_engage_wrong_token_is_reported_without_the_token(mixpanel_stub):
    mp = MixpanelResource(**{**mixpanel_stub.resource_kwargs(), "project_token": "wrong-token-1234"})
    result = mp.engage([build_set_update(None, "u1", {"m": 1})])
    assert not result.ok and "$token" in result.error and "wrong-token-1234" not in result.error


def test_engage_batch_limit_is_enforced(mixpanel_stub):
    mp = MixpanelResource(**mixpanel_stub.resource_kwargs())
    with pytest.raises(ValueError, match="2000"):
        mp.engage([mp.set_update(f"u{i}", {}) for i in range(2001)])
    assert mixpanel_stub.engage_requests == []


def test_engage_without_token_writes_the_outbox(tmp_path):
    mp = LocalMixpanel(local_dir=str(tmp_path))
    result = mp.engage([mp.set_update("u1", {"m": 1}), build_unset_update("secret-token-xyz", "u2", ["m"])])

    assert result.ok and result.destination == "outbox" and result.requests == 0
    rows = [json.loads(line) for line in (tmp_path / "outbox" / "mixpanel_engage.jsonl").read_text().splitlines()]
    assert [r["$distinct_id"] for r in rows] == ["u1", "u2"]
    assert {r["$token"] for r in rows} == {TOKEN_PLACEHOLDER}
