"""The anomaly/ingestion event configuration (``config/events_config.json``).

Pure logic, no Dagster.  ``EVENTS_CONFIG`` (inline JSON) wins over the file at
``EVENTS_CONFIG_PATH``.  The document is validated on load; every problem is reported
with the entry it concerns (``events[2] ('name')``), all problems at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

# The temp-user cohort's two events are always collected (specs/mixpanel.md, temp_users.md).
ALWAYS_COLLECTED = ("impression_privacy", "impression_restore_user_state_by_device_id")

PROJECT_ROOT = Path(__file__).resolve().parents[2]

_TOP_LEVEL_KEYS = {"events"}
_ENTRY_KEYS = {"name", "enabled", "alert_threshold", "alert_channel", "time_window_minutes"}
_REQUIRED_KEYS = {"name"}


class EventsConfigError(ValueError):
    """The events configuration is invalid; the message names the entries and the source."""


@dataclass(frozen=True)
class EventConfig:
    name: str
    enabled: bool = True
    alert_threshold: Optional[int] = None  # None: collected, never alerted
    alert_channel: Optional[str] = None  # None: the Slack default channel
    time_window_minutes: int = 1

    @property
    def monitored(self) -> bool:
        return self.enabled and self.alert_threshold is not None


@dataclass(frozen=True)
class EventsConfig:
    events: tuple[EventConfig, ...]
    source: str = "<inline>"

    @property
    def enabled(self) -> tuple[EventConfig, ...]:
        return tuple(e for e in self.events if e.enabled)

    @property
    def monitored(self) -> tuple[EventConfig, ...]:
        """Enabled events that have an alert threshold (what the detector examines)."""
        return tuple(e for e in self.events if e.monitored)

    def collected_event_names(self) -> list[str]:
        """Enabled events plus the cohort's two events, sorted, without duplicates."""
        return sorted({e.name for e in self.enabled} | set(ALWAYS_COLLECTED))


# Upper bounds that keep every configured value usable downstream: thresholds are stored as
# INT64 and bound as INT64 query parameters; windows are UTC-aligned and at most one day.
MAX_ALERT_THRESHOLD = 2**63 - 1
MAX_WINDOW_MINUTES = 1440


def _positive_int(value: Any, maximum: Optional[int] = None) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value > 0
        and (maximum is None or value <= maximum)
    )


def _is_text(value: str) -> bool:
    """Encodable as UTF-8 (no lone surrogates): what Mixpanel, Slack and the tables accept."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_events_config(document: Any, source: str = "<inline>") -> EventsConfig:
    """Validate a parsed JSON document; raise :class:`EventsConfigError` listing every problem."""
    problems: list[str] = []
    if not isinstance(document, dict):
        raise EventsConfigError(f"{source}: expected a JSON object with an 'events' list")
    unknown_top = sorted(set(document) - _TOP_LEVEL_KEYS)
    if unknown_top:
        problems.append(f"unknown top-level key(s) {unknown_top} (allowed: ['events'])")
    entries = document.get("events")
    if not isinstance(entries, list):
        problems.append("'events' must be a list")
        entries = []
    parsed: list[EventConfig] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        label = f"events[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{label}: expected an object, got {type(entry).__name__}")
            continue
        name = entry.get("name")
        if isinstance(name, str) and name:
            label = f"events[{index}] ({name!r})"
        entry_problems: list[str] = []
        unknown = sorted(set(entry) - _ENTRY_KEYS)
        if unknown:
            entry_problems.append(f"unknown key(s) {unknown} (allowed: {sorted(_ENTRY_KEYS)})")
        for key in sorted(_REQUIRED_KEYS - set(entry)):
            entry_problems.append(f"missing '{key}'")
        if "name" in entry and not (isinstance(name, str) and name.strip()):
            entry_problems.append("'name' must be a non-empty string")
        elif isinstance(name, str) and not _is_text(name):
            entry_problems.append("'name' is not valid Unicode text (lone surrogate)")
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            entry_problems.append(f"'enabled' must be true or false, got {enabled!r}")
        threshold = entry.get("alert_threshold")
        if threshold is not None and not _positive_int(threshold, MAX_ALERT_THRESHOLD):
            entry_problems.append(
                f"'alert_threshold' must be a positive integer, got {threshold!r}"
                + (f" (at most {MAX_ALERT_THRESHOLD})" if _positive_int(threshold) else "")
            )
        window = entry.get("time_window_minutes", 1)
        if not _positive_int(window, MAX_WINDOW_MINUTES):
            entry_problems.append(
                f"'time_window_minutes' must be a positive integer, got {window!r}"
                + (f" (at most {MAX_WINDOW_MINUTES}: one day)" if _positive_int(window) else "")
            )
        channel = entry.get("alert_channel")
        if channel is not None and not (
            isinstance(channel, str) and channel.startswith("#") and len(channel) > 1 and _is_text(channel)
        ):
            entry_problems.append(f"'alert_channel' must be a channel name starting with '#', got {channel!r}")
        if isinstance(name, str) and name:
            if name in seen:
                entry_problems.append(f"duplicate name (also events[{seen[name]}])")
            else:
                seen[name] = index
        if entry_problems:
            problems.extend(f"{label}: {p}" for p in entry_problems)
            continue
        parsed.append(
            EventConfig(
                name=name,
                enabled=enabled,
                alert_threshold=threshold,
                alert_channel=channel,
                time_window_minutes=window,
            )
        )
    if problems:
        raise EventsConfigError(
            f"Invalid events configuration ({source}):\n  - " + "\n  - ".join(problems)
        )
    return EventsConfig(events=tuple(parsed), source=source)


def load_events_config(path: Optional[Path | str] = None, inline: Optional[str] = None) -> EventsConfig:
    """``inline`` (the ``EVENTS_CONFIG`` value) wins; else the file at ``path``."""
    if inline is not None and inline.strip():
        try:
            document = json.loads(inline)
        except json.JSONDecodeError as exc:
            raise EventsConfigError(f"EVENTS_CONFIG is not valid JSON: {exc}") from None
        except RecursionError:
            raise EventsConfigError("EVENTS_CONFIG is not a valid configuration: JSON nested too deeply") from None
        return parse_events_config(document, source="EVENTS_CONFIG")
    if path is None:
        raise EventsConfigError("No events configuration: set EVENTS_CONFIG_PATH or EVENTS_CONFIG")
    file = Path(path)
    if not file.exists() and not file.is_absolute() and (PROJECT_ROOT / file).exists():
        file = PROJECT_ROOT / file  # the default path, when the process runs elsewhere
    if not file.exists():
        raise EventsConfigError(
            f"Events configuration file {file} does not exist: set EVENTS_CONFIG_PATH "
            "(or EVENTS_CONFIG with inline JSON)"
        )
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventsConfigError(f"{file} (EVENTS_CONFIG_PATH) is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise EventsConfigError(f"{file} (EVENTS_CONFIG_PATH) cannot be read: {exc.strerror or exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventsConfigError(f"{file} (EVENTS_CONFIG_PATH) is not valid JSON: {exc}") from None
    except RecursionError:
        raise EventsConfigError(f"{file} (EVENTS_CONFIG_PATH) is not a valid configuration: JSON nested too deeply") from None
    return parse_events_config(document, source=str(file))


def events_config_from_settings(settings: Any) -> EventsConfig:
    """The configuration the settings point at (inline ``EVENTS_CONFIG`` first)."""
    return load_events_config(settings.events_config_path, settings.events_config_inline)
