"""Process helpers for the emulators and servers the test fixtures start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Sequence


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller retries on a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_process_group(
    argv: Sequence[str], log_path: Path, env: Optional[dict] = None, cwd: Optional[Path] = None
) -> subprocess.Popen:
    """Start ``argv`` in its own session / process group, output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )
    finally:
        log.close()  # the child holds its own descriptor


def kill_process_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group of ``proc``, then SIGKILL what is left."""
    if proc.poll() is not None:
        _reap_group(proc.pid)
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    _reap_group(proc.pid)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


def _reap_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "<no log>"


def wait_until(
    ready: Callable[[], bool],
    timeout: float,
    proc: Optional[subprocess.Popen] = None,
    what: str = "process",
    log_path: Optional[Path] = None,
) -> None:
    """Poll ``ready()`` until true; raise with the log tail on timeout or early exit."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {proc.returncode} before it was ready.\n"
                + (tail(log_path) if log_path else "")
            )
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{what} not ready after {timeout:.0f}s.\n" + (tail(log_path) if log_path else "")
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def http_answers(url: str) -> bool:
    """True when ``url`` answers HTTP at all (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def start_watchdog(cleanup_command: str) -> subprocess.Popen:
    """Run ``cleanup_command`` (sh) if this process dies without tearing down.

    Session fixtures stop their servers at the end of the session; a test process that is
    killed outright (SIGKILL, a CI time limit) never gets there.  This small shell polls
    our pid and runs the clean-up once it is gone.  Stop it with :func:`stop_watchdog`
    after a normal teardown.
    """
    script = (
        f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 2; done; {cleanup_command}"
    )
    return subprocess.Popen(
        ["sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_watchdog(proc: Optional[subprocess.Popen]) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def group_kill_command(pgid: int) -> str:
    """sh: SIGTERM the process group, then SIGKILL what is left."""
    return f"kill -TERM -{pgid} 2>/dev/null; sleep 3; kill -KILL -{pgid} 2>/dev/null"
