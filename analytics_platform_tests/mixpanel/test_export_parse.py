"""The bulk parser of export files (pure: files in, Arrow batches out)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from analytics_platform.mixpanel.export_parse import ExportParser

UTC = dt.timezone.utc


def parse(tmp_path, lines, *, batch_rows=200_000, block_bytes=16 << 20, raw=False):
    path = tmp_path / "export.jsonl"
    data = b"".join(l if isinstance(l, bytes) else (l + "\n").encode() for l in lines) if not raw else lines
    path.write_bytes(data)
    events, rejected = [], []
    with ExportParser(batch_rows=batch_rows, block_bytes=block_bytes) as parser:
        for batch in parser.parse(path):
            events.extend(batch.events.to_pylist())
            rejected.extend(batch.rejected.to_pylist())
        stats = parser.stats
        dups = parser.duplicates_total()
    return events, rejected, stats, dups


def test_raw_properties_text_is_kept_exactly(tmp_path):
    props = '{"time":1717581600,"distinct_id":"u\\u00e9","name":"Zoë 🎉","big":123456789012345678901234567890,"f":1.50,"n":{"a":[1,{"b":null}]}}'
    events, rejected, stats, _ = parse(tmp_path, ['{"event":"e","properties":' + props + "}"])
    assert rejected == []
    assert events[0]["properties"] == props
    assert json.loads(events[0]["properties"])["big"] == 123456789012345678901234567890
    assert events[0]["distinct_id"] == "ué"
    assert stats.reserialised_properties == 0


def test_other_shapes_fall_back_to_an_exact_reserialisation(tmp_path):
    lines = [
        '{"properties":{"time":1717581600,"distinct_id":"a","$insert_id":"p-first"},"event":"e"}',
        '{"event":"e","properties":{"time":1717581600,"$insert_id":"extra-key"},"other":{"properties":1}}',
        '{ "event" : "e" , "properties" : {"time": 1717581600, "$insert_id": "spaces", "big": 9007199254740993} }',
        '{"event":"x\\"properties\\":","properties":{"time":1717581600,"$insert_id":"tricky"}}',
    ]
    events, rejected, stats, _ = parse(tmp_path, lines)
    assert rejected == []
    by_id = {e["event_id"]: e for e in events}
    assert set(by_id) == {"p-first", "extra-key", "spaces", "tricky"}
    assert json.loads(by_id["spaces"]["properties"])["big"] == 9007199254740993
    assert json.loads(by_id["extra-key"]["properties"]) == {"time": 1717581600, "$insert_id": "extra-key"}
    assert by_id["tricky"]["event_name"] == 'x"properties":'
    assert by_id["tricky"]["properties"] == '{"time":1717581600,"$insert_id":"tricky"}'


def test_seconds_milliseconds_and_fractions(tmp_path):
    lines = [
        '{"event":"e","properties":{"time":1717545600,"$insert_id":"s"}}',
        '{"event":"e","properties":{"time":1717545600123,"$insert_id":"ms"}}',
        '{"event":"e","properties":{"time":1717545600.5,"$insert_id":"frac"}}',
        '{"event":"e","properties":{"time":"1717545601","$insert_id":"str"}}',
    ]
    events, rejected, _, _ = parse(tmp_path, lines)
    got = {e["event_id"]: e["event_timestamp"].replace(tzinfo=UTC) for e in events}
    base = dt.datetime(2024, 6, 5, tzinfo=UTC)
    assert got == {
        "s": base,
        "ms": base + dt.timedelta(milliseconds=123),
        "frac": base + dt.timedelta(milliseconds=500),
        "str": base + dt.timedelta(seconds=1),
    }
    assert {e["event_date"] for e in events} == {dt.date(2024, 6, 5)}


@pytest.mark.parametrize(
    "text, reason",
    [
        ("not json", "invalid_json"),
        ('{"event":"e","properties":{"time":1', "invalid_json"),
        ("[1,2]", "not_an_object"),
        ('"just a string"', "not_an_object"),
        ('{"properties":{"time":1717545600}}', "missing_event"),
        ('{"event":42,"properties":{"time":1717545600}}', "missing_event"),
        ('{"event":"","properties":{"time":1717545600}}', "missing_event"),
        ('{"event":"e"}', "missing_properties"),
        ('{"event":"e","properties":[1]}', "missing_properties"),
        ('{"event":"e","properties":{"distinct_id":"x"}}', "missing_time"),
        ('{"event":"e","properties":{"time":null}}', "missing_time"),
        ('{"event":"e","properties":{"time":true}}', "invalid_time"),
        ('{"event":"e","properties":{"time":-5}}', "invalid_time"),
        ('{"event":"e","properties":{"time":1e30}}', "invalid_time"),
        ('{"event":"e","properties":{"time":{"a":1}}}', "invalid_time"),
    ],
)
def test_rejection_reasons(tmp_path, text, reason):
    events, rejected, stats, _ = parse(tmp_path, [text, '{"event":"e","properties":{"time":1717545600,"$insert_id":"ok"}}'])
    assert [e["event_id"] for e in events] == ["ok"]
    assert rejected == [{"line_no": 0, "raw_line": text, "reason": reason}]
    assert stats.rejected_by_reason == {reason: 1}


def test_blank_lines_crlf_invalid_utf8_and_no_final_newline(tmp_path):
    data = (
        b'{"event":"e","properties":{"time":1717545600,"$insert_id":"a"}}\r\n'
        b"\n   \n"
        b'{"event":"e","properties":{"time":1717545600,"$insert_id":"b","s":"\xff"}}\n'
        b'{"event":"e","properties":{"time":1717545600,"$insert_id":"c"}}'
    )
    events, rejected, stats, _ = parse(tmp_path, data, raw=True)
    assert [e["event_id"] for e in events] == ["a", "c"]
    assert events[0]["properties"] == '{"time":1717545600,"$insert_id":"a"}'
    assert [r["reason"] for r in rejected] == ["invalid_utf8"]
    assert stats.blank_lines == 2 and stats.lines == 3


def test_event_id_falls_back_to_a_deterministic_hash(tmp_path):
    lines = [
        '{"event":"e","properties":{"time":1717545600,"distinct_id":"u1","k":1}}',
        '{"event":"e","properties":{"time":1717545600,"distinct_id":"u1","k":1}}',  # same: collapses
        '{"event":"e","properties":{"time":1717545600,"distinct_id":"u1","k":2}}',
        '{"event":"e","properties":{"time":1717545600,"distinct_id":"u1","$insert_id":""}}',
    ]
    events, _, _, dups = parse(tmp_path, lines)
    again, _, _, _ = parse(tmp_path, lines)
    ids = [e["event_id"] for e in events]
    assert len(ids) == 3 and all(i.startswith("h:") for i in ids)
    assert ids == [e["event_id"] for e in again]
    assert dups == 1


def test_duplicates_across_batches_and_blocks_are_counted_first_kept(tmp_path):
    lines = [f'{{"event":"e","properties":{{"time":1717545600,"$insert_id":"id-{i % 50}","n":{i}}}}}' for i in range(300)]
    events, _, stats, dups = parse(tmp_path, lines, batch_rows=40, block_bytes=1000)
    assert dups == 250
    # within a batch the first occurrence wins; across batches the loader's insert_missing keeps the first
    first_batch = {}
    for e in events:
        first_batch.setdefault(e["event_id"], json.loads(e["properties"])["n"])
    assert first_batch["id-0"] == 0
    assert stats.lines == 300 and stats.valid == 300


def test_line_longer_than_a_block(tmp_path):
    long_value = "x" * 5000
    lines = [f'{{"event":"e","properties":{{"time":1717545600,"$insert_id":"long","v":"{long_value}"}}}}', '{"event":"e","properties":{"time":1717545600,"$insert_id":"short"}}']
    events, rejected, _, _ = parse(tmp_path, lines, block_bytes=1024)
    assert [e["event_id"] for e in events] == ["long", "short"] and rejected == []
    assert len(events[0]["properties"]) > 5000


def test_empty_file(tmp_path):
    assert parse(tmp_path, []) [:2] == ([], [])
