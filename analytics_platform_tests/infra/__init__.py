"""Helpers behind the session fixtures in ``analytics_platform_tests/conftest.py``.

* :mod:`.processes` - free ports, processes in their own process group, readiness waits
* :mod:`.postgres` - a throwaway PostgreSQL cluster (system binaries, else pgserver)
* :mod:`.firestore` - the Firestore emulator and a known-good firebase-admin client
* :mod:`.bigquery` - the BigQuery API emulator (local-bigquery in the .venv-bq side env)

Nothing here reads or changes the process environment for the project: fixtures hand
endpoints to tests, and tests set variables with ``monkeypatch``.
"""
