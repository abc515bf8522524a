"""The export parser's background mode (blocks parsed by a thread one batch ahead): the same
batches, order and counts as the plain mode, errors reach the caller, an early stop leaves
no thread behind."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from analytics_platform.mixpanel.export_parse import ExportParser, prefetch


def _lines() -> list[bytes]:
    out = []
    for i in range(900):
        if i % 97 == 5:
            out.append(b'{"event":"e","properties":{"time":"soon"}}\n')  # invalid_time
        elif i % 131 == 7:
            out.append(b"not json\n")
        elif i % 53 == 0:
            out.append(b"\n")  # blank
        else:
            ms = i % 3 == 1
            t = 1717545600 + i
            t = t * 1000 + i % 1000 if ms else t
            ident = f'"$insert_id":"id-{i % 400}",' if i % 11 else ""  # duplicates and id-less events
            out.append(f'{{"event":"e","properties":{{"time":{t},{ident}"distinct_id":"u{i % 7}","n":{i}}}}}\n'.encode())
    return out


def _run(path, background: bool, **kw):
    batches = []
    with ExportParser(**kw) as parser:
        for batch in parser.parse(path, background=background):
            batches.append((batch.events.to_pylist(), batch.rejected.to_pylist()))
        return batches, dataclasses.asdict(parser.stats), parser.duplicates_total()


@pytest.mark.parametrize("batch_rows,block_bytes", [(40, 1000), (200_000, 16 << 20), (97, 4096)])
def test_background_parse_gives_the_same_batches_and_counts(tmp_path, batch_rows, block_bytes):
    path = tmp_path / "export.jsonl"
    path.write_bytes(b"".join(_lines()))
    plain = _run(path, False, batch_rows=batch_rows, block_bytes=block_bytes)
    background = _run(path, True, batch_rows=batch_rows, block_bytes=block_bytes)
    assert background == plain
    batches, stats, dups = plain
    assert dups > 0 and stats["rejected"] > 0 and stats["blank_lines"] > 0
    assert sum(len(e) for e, _ in batches) == stats["valid"] - stats["duplicates_in_batches"]


def test_a_stop_of_the_caller_ends_the_background_thread(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_bytes(b"".join(_lines()))
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="insert failed"):
        with ExportParser(batch_rows=40, block_bytes=1000) as parser:
            for _ in parser.parse(path, background=True):
                raise RuntimeError("insert failed")
    assert threading.active_count() == before


def test_prefetch_hands_the_producers_error_to_the_consumer():
    def items():
        yield 1
        yield 2
        raise ValueError("bad block")

    got = []
    with pytest.raises(ValueError, match="bad block"):
        for item in prefetch(items()):
            got.append(item)
    assert got == [1, 2]
