"""The export parser's background mode (blocks parsed by a thread one batch ahead): the same
batches, order and counts as the plain mode, errors reach the caller, an early stop leaves
no thread behind."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from analytics_platform.mixpanel.export_parse import ExportParser, prefetch
from analytics_platform.resources.growing_file import FileRestarted, GrowingFile


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


# --------------------------------------------------------------- a file still downloading
def _write_in_pieces(growing, path, data: bytes, *, piece: int, pause_after: int = -1, resume=None, finish=True):
    """The writer side of export_to_file: the file (re)started, written and flushed in
    pieces, then finished."""
    with open(path, "wb") as out:
        growing.restart(path)
        for start in range(0, len(data), piece):
            out.write(data[start : start + piece])
            out.flush()
            growing.wrote(len(data[start : start + piece]))
            if start // piece == pause_after and resume is not None:
                assert resume.wait(timeout=30), "the parser did not hand out a batch while the file was growing"
    if finish:
        growing.finish()


def test_a_growing_file_parses_to_the_same_batches_while_it_is_written(tmp_path):
    data = b"".join(_lines())
    plain_path = tmp_path / "plain.jsonl"
    plain_path.write_bytes(data)
    plain = _run(plain_path, False, batch_rows=40, block_bytes=1000)

    growing = GrowingFile()
    first_batch = threading.Event()
    writer = threading.Thread(
        target=_write_in_pieces,
        args=(growing, tmp_path / "export.jsonl.part", data),
        kwargs={"piece": 700, "pause_after": len(data) // 1400, "resume": first_batch},
    )
    batches = []
    with ExportParser(batch_rows=40, block_bytes=1000) as parser:
        it = parser.parse(growing, background=True)
        writer.start()  # the parser thread is already waiting for the file
        for batch in it:
            first_batch.set()  # the writer holds the second half back until a batch is out
            batches.append((batch.events.to_pylist(), batch.rejected.to_pylist()))
        result = batches, dataclasses.asdict(parser.stats), parser.duplicates_total()
    writer.join()
    assert result == plain


def test_the_end_of_a_growing_file_is_read_only_once_the_writer_finished(tmp_path):
    growing = GrowingFile()
    path = tmp_path / "export.jsonl.part"
    # a complete body whose last line is cut: without finish() no batch may hold that line
    data = b'{"event":"e","properties":{"time":1717545600,"$insert_id":"a"}}\n{"event":"e","prop'
    _write_in_pieces(growing, path, data, piece=10, finish=False)
    got = []

    def consume():
        with ExportParser(batch_rows=1, block_bytes=1 << 20) as parser:
            try:
                for batch in parser.parse(growing, background=True):
                    got.append(batch.events.num_rows + batch.rejected.num_rows)
            except FileRestarted:
                got.append("restarted")

    reader = threading.Thread(target=consume)
    reader.start()
    reader.join(timeout=1.0)
    assert reader.is_alive() and got == []  # waiting for more: the body is not complete
    growing.fail(RuntimeError("every attempt was truncated"))
    reader.join(timeout=10)
    assert not reader.is_alive() and got == ["restarted"]


def test_a_reader_of_an_abandoned_attempt_stops(tmp_path):
    growing = GrowingFile()
    line = b'{"event":"e","properties":{"time":1717545600,"$insert_id":"a"}}\n'
    _write_in_pieces(growing, tmp_path / "a.part", line * 50, piece=100, finish=False)
    buffer = bytearray(1 << 16)
    with growing.reader() as reader:
        assert reader.readinto(buffer) == len(line) * 50  # what the first attempt wrote
        _write_in_pieces(growing, tmp_path / "b.part", line * 50, piece=100)  # the retried request
        with pytest.raises(FileRestarted):
            reader.readinto(buffer)
    with growing.reader() as reader:  # a new reader takes the finished attempt, whole
        assert reader.readinto(buffer) == len(line) * 50 and reader.readinto(buffer) == 0
