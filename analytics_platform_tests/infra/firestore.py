"""The Firestore emulator and the known-good way to talk to it with firebase-admin.

The emulator is the ``cloud_firestore_emulator`` launcher that the gcloud SDK's
``cloud-firestore-emulator`` component installs under
``<sdk root>/platform/cloud-firestore-emulator/`` (a Java program).  It is started with
``start --host=127.0.0.1 --port=P`` in its own process group and stopped by killing the
group.

firebase-admin against the emulator: plain ``firebase_admin.initialize_app()`` looks for
Application Default Credentials and raises ``DefaultCredentialsError``.  Pass a
``firebase_admin.credentials.Base`` whose ``get_credential()`` returns
``google.auth.credentials.AnonymousCredentials()`` plus ``{"projectId": ...}``; the
underlying ``google.cloud.firestore.Client`` reads ``FIRESTORE_EMULATOR_HOST`` when it is
constructed and then uses an insecure channel to that host.  See :func:`firestore_client`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from .processes import (
    free_port,
    group_kill_command,
    http_answers,
    kill_process_group,
    start_process_group,
    start_watchdog,
    stop_watchdog,
    wait_until,
)

EMULATOR_HOST_VAR = "FIRESTORE_EMULATOR_HOST"
_ENV_LOCK = threading.Lock()


def sdk_root() -> Optional[Path]:
    """The gcloud SDK root (``gcloud info``), or None when gcloud is absent."""
    gcloud = shutil.which("gcloud")
    if not gcloud:
        return None
    try:
        out = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    if out and Path(out).is_dir():
        return Path(out)
    # gcloud is usually <root>/bin/gcloud behind a symlink
    guess = Path(os.path.realpath(gcloud)).parent.parent
    return guess if (guess / "platform").is_dir() else None


def emulator_binary() -> Path:
    root = sdk_root()
    candidate = root / "platform" / "cloud-firestore-emulator" / "cloud_firestore_emulator" if root else None
    if candidate is None or not candidate.exists():
        raise FileNotFoundError(
            "The Firestore emulator is not installed: expected "
            f"{candidate or '<gcloud sdk root>/platform/cloud-firestore-emulator/cloud_firestore_emulator'}. "
            "Install the gcloud component (`gcloud components install cloud-firestore-emulator` "
            "or the Debian package google-cloud-cli-firestore-emulator) and a Java runtime."
        )
    return candidate


@dataclass
class FirestoreEmulator:
    host: str  # "127.0.0.1:PORT"
    process: subprocess.Popen
    log_path: Path
    watchdog: Optional[subprocess.Popen] = None

    def stop(self) -> None:
        kill_process_group(self.process)
        stop_watchdog(self.watchdog)


def start_firestore_emulator(log_dir: Path, timeout: float = 90.0) -> FirestoreEmulator:
    """Start the emulator on a free port; returns when it answers HTTP."""
    binary = emulator_binary()
    env = dict(os.environ)
    # A short-lived test JVM on 2 cores: C1 only and the serial GC start and warm up
    # several times faster than the defaults.
    env["JAVA_TOOL_OPTIONS"] = " ".join(
        filter(None, [env.get("JAVA_TOOL_OPTIONS"), "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"])
    )
    env.pop(EMULATOR_HOST_VAR, None)
    last_error: Optional[Exception] = None
    for attempt in range(3):
        port = free_port()
        log_path = log_dir / f"firestore-emulator-{attempt}.log"
        proc = start_process_group(
            [str(binary), "start", "--host=127.0.0.1", f"--port={port}"], log_path, env=env, cwd=log_dir
        )
        try:
            wait_until(
                lambda: http_answers(f"http://127.0.0.1:{port}/"),
                timeout, proc, "Firestore emulator", log_path,
            )
        except (RuntimeError, TimeoutError) as exc:
            kill_process_group(proc)
            last_error = exc
            continue
        host = f"127.0.0.1:{port}"
        try:  # the first real request is the slow one (class loading): pay it here
            clear_firestore(host, "warm-up")
        except OSError:
            pass
        watchdog = start_watchdog(group_kill_command(proc.pid))
        return FirestoreEmulator(host=host, process=proc, log_path=log_path, watchdog=watchdog)
    raise RuntimeError(f"Firestore emulator did not start: {last_error}")


def unique_project_id(prefix: str = "test") -> str:
    """A fresh project id: the emulator keeps each project's data apart."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def clear_firestore(host: str, project_id: str) -> None:
    """Delete every document of ``project_id``'s default database in the emulator."""
    req = urllib.request.Request(
        f"http://{host}/emulator/v1/projects/{project_id}/databases/(default)/documents",
        method="DELETE",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


@contextmanager
def _emulator_env(host: str) -> Iterator[None]:
    """FIRESTORE_EMULATOR_HOST=host while a client is constructed (no-op if already so)."""
    with _ENV_LOCK:
        previous = os.environ.get(EMULATOR_HOST_VAR)
        if previous == host:
            yield
            return
        os.environ[EMULATOR_HOST_VAR] = host
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(EMULATOR_HOST_VAR, None)
            else:
                os.environ[EMULATOR_HOST_VAR] = previous


def anonymous_credential():
    """A firebase-admin credential wrapping ``AnonymousCredentials`` (emulator only)."""
    from firebase_admin import credentials
    from google.auth.credentials import AnonymousCredentials

    class _AnonymousCredential(credentials.Base):
        def get_credential(self):
            return AnonymousCredentials()

    return _AnonymousCredential()


def firestore_client(project_id: str, host: str):
    """A ``google.cloud.firestore.Client`` from firebase-admin, talking to the emulator.

    The known-good recipe (copy it into production code that supports the emulator)::

        app = firebase_admin.initialize_app(
            anonymous_credential(), {"projectId": project_id}, name=<unique app name>)
        client = firebase_admin.firestore.client(app)   # FIRESTORE_EMULATOR_HOST set

    The app is named after project and host so repeated calls reuse it.  The client reads
    ``FIRESTORE_EMULATOR_HOST`` only while it is constructed; this helper sets it for that
    moment if the caller has not (tests normally ``monkeypatch.setenv`` it).
    """
    import firebase_admin
    from firebase_admin import firestore

    name = f"emulator:{host}:{project_id}"
    try:
        app = firebase_admin.get_app(name)
    except ValueError:
        app = firebase_admin.initialize_app(anonymous_credential(), {"projectId": project_id}, name=name)
    with _emulator_env(host):
        client = firestore.client(app)
    if getattr(client, "_emulator_host", host) != host:
        # firebase-admin caches one client per app: built earlier under another host.
        raise RuntimeError(f"cached Firestore client for {name} does not point at {host}")
    return client
