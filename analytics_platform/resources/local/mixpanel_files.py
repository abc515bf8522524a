"""Local stand-in of Mixpanel: export from files, /engage to an outbox (no network).

Export reads ``{local_dir}/mixpanel_export/YYYY-MM-DD.jsonl`` (the Raw Event Export's
JSON-lines shape; the demo writes these files), keeping the requested events; malformed
lines are kept for the loader to count and quarantine, the ``where`` filter is ignored.
Profile updates are appended to ``{local_dir}/outbox/mixpanel_engage.jsonl`` with the
token replaced by ``<MIXPANEL_PROJECT_TOKEN>``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import orjson
from dagster import get_dagster_logger

from analytics_platform.resources.growing_file import GrowingFile
from analytics_platform.resources.mixpanel import (
    CHUNK,
    TOKEN_PLACEHOLDER,
    DateLike,
    EngageResult,
    ExportStats,
    MixpanelService,
    day_of,
    days_between,
)

_log = get_dagster_logger("mixpanel")


def _keep_line(line: bytes, wanted: Optional[frozenset]) -> bool:
    """Event filter: malformed lines are kept (the loader counts and quarantines them)."""
    if not line.strip():
        return False
    if wanted is None:
        return True
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return True
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return True
    return record["event"] in wanted


class LocalMixpanel(MixpanelService):
    """Mixpanel export from local files and /engage to the local outbox."""

    local_dir: str = ".analytics_data"

    @property
    def export_mode(self) -> str:
        return "local_files"

    @property
    def engage_mode(self) -> str:
        return "outbox"

    @property
    def export_dir(self) -> Path:
        return Path(self.local_dir) / "mixpanel_export"

    @property
    def outbox_path(self) -> Path:
        return Path(self.local_dir) / "outbox" / "mixpanel_engage.jsonl"

    def export_to_file(
        self,
        from_date: DateLike,
        to_date: DateLike,
        events: Optional[Sequence[str]] = None,
        where: Optional[str] = None,
        *,
        dest: Union[str, Path],
        progress: Optional[GrowingFile] = None,
    ) -> ExportStats:
        start, end = day_of(from_date), day_of(to_date)
        if start > end:
            raise ValueError(f"from_date {start} is after to_date {end}")
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        folder = self.export_dir
        if where:
            _log.warning("Local Mixpanel export files: the `where` filter is ignored")
        wanted = frozenset(events) if events else None
        lines = size = 0
        part = dest.with_name(dest.name + ".part")
        with open(part, "wb") as out:
            for day in days_between(start, end):
                source = folder / f"{day.isoformat()}.jsonl"
                if not source.exists():
                    continue
                with open(source, "rb", buffering=CHUNK) as handle:
                    for line in handle:
                        if not _keep_line(line, wanted):
                            continue
                        if not line.endswith(b"\n"):
                            line += b"\n"
                        out.write(line)
                        lines += 1
                        size += len(line)
        if progress is not None:  # written at once: a reader may take it whole
            progress.restart(part)
            progress.wrote(size)
            progress.finish()
        os.replace(part, dest)
        _log.info(f"Mixpanel export from local files under {folder}: {lines} lines")
        return ExportStats(dest, lines, size, 0, "local", time.monotonic() - started, 0.0)

    def _send_updates(self, updates: Sequence[dict]) -> EngageResult:
        path = self.outbox_path
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = b"".join(
            orjson.dumps({**u, "$token": TOKEN_PLACEHOLDER}) + b"\n" for u in updates
        )
        with open(path, "ab") as handle:  # one write: lines of concurrent runs never interleave
            handle.write(payload)
        _log.info(f"MIXPANEL_PROJECT_TOKEN unset: {len(updates)} profile update(s) written to {path}")
        return EngageResult(True, len(updates), 0, "outbox")
