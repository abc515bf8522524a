"""A file written by one thread and read by another while it grows.

The Mixpanel export is streamed to a file by the client (``export_to_file(progress=...)``)
while the export parser reads it (``ExportParser.parse(growing)``): parsing overlaps the
download instead of waiting for it.  The writer says when it (re)starts the file
(:meth:`GrowingFile.restart`, e.g. a retried request), after each flushed write
(:meth:`wrote`), and when the file is complete (:meth:`finish`) or will never be
(:meth:`fail`).  A reader sees end-of-file only once the writer has finished: a body cut
short is never read as complete; if the writer starts over, the reader raises
:class:`FileRestarted` (what it read belongs to an abandoned attempt).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional


class FileRestarted(Exception):
    """The writer started the file over (or gave up): what was read is void."""


class GrowingFile:
    """Shared state of a file being written (see module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.generation = 0  # how many times the writer (re)started the file
        self._path: Optional[Path] = None
        self._written = 0
        self._done = False
        self._failed: Optional[BaseException] = None
        # A read handle opened by restart(), while the file surely exists under its name
        # (the writer renames it once complete): the reader takes it.
        self._read_handle = None

    # ------------------------------------------------------------------ writer
    def restart(self, path: Path) -> None:
        """The writer (re)created ``path`` (empty): a reader of an earlier attempt stops."""
        with self._cond:
            self._drop_read_handle()
            self.generation += 1
            self._path, self._written, self._done = Path(path), 0, False
            self._read_handle = open(path, "rb", buffering=0)
            self._cond.notify_all()

    def _drop_read_handle(self) -> None:
        if self._read_handle is not None:  # nobody took it
            self._read_handle.close()
            self._read_handle = None

    def wrote(self, size: int) -> None:
        """``size`` more bytes are written and flushed."""
        with self._cond:
            self._written += size
            self._cond.notify_all()

    def finish(self) -> None:
        """The current attempt's file is complete."""
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """The writer gave up: readers stop with :class:`FileRestarted`."""
        with self._cond:
            self._failed = exc
            self._drop_read_handle()
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        with self._cond:
            return self._done and self._failed is None

    # ------------------------------------------------------------------ reader
    def reader(self) -> "GrowingFileReader":
        return GrowingFileReader(self)


class GrowingFileReader:
    """``readinto`` over the writer's current attempt; blocks until bytes are written."""

    def __init__(self, growing: GrowingFile) -> None:
        self._growing = growing
        self._handle = None
        self._generation = 0
        self._position = 0

    def __enter__(self) -> "GrowingFileReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def readinto(self, buffer) -> int:
        g = self._growing
        with g._cond:
            while True:
                if g._failed is not None:
                    raise FileRestarted(f"the writer gave up: {g._failed}")
                if self._handle is not None and g.generation != self._generation:
                    raise FileRestarted("the writer started the file over")
                if g.generation and (g._written > self._position or g._done):
                    break
                g._cond.wait()
            if self._handle is None:  # the first attempt the writer started
                self._generation = g.generation
                self._handle, g._read_handle = g._read_handle, None
            available = g._written - self._position
        if available <= 0:
            return 0  # finished and everything read
        read = self._handle.readinto(memoryview(buffer)[:available])
        self._position += read
        return read
