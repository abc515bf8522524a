#!/usr/bin/env bash
# Create the Python 3.13 side environment that runs the BigQuery API emulator
# (local-bigquery), used by the `bigquery_emulator` pytest fixture.
#
#   bash .ci/setup_bigquery_emulator.sh            # -> .venv-bq/ at the repository root
#   BQ_EMULATOR_VENV=/some/dir bash .ci/setup_bigquery_emulator.sh
#
# local-bigquery 0.3.2 works offline only on Python 3.13 with duckdb 1.5.5 and the
# duckdb-extension-* wheels (no extension can be downloaded at run time). Idempotent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BQ_EMULATOR_VENV:-$ROOT/.venv-bq}"

find_python313() {
    if [ -n "${PYTHON313:-}" ] && [ -x "$PYTHON313" ]; then echo "$PYTHON313"; return; fi
    if command -v pyenv >/dev/null 2>&1; then
        local p
        p="$(pyenv root)/versions/3.13.0/bin/python3.13"
        if [ -x "$p" ]; then echo "$p"; return; fi
        for p in "$(pyenv root)"/versions/3.13*/bin/python3.13; do
            if [ -x "$p" ]; then echo "$p"; return; fi
        done
    fi
    for p in python3.13 /usr/bin/python3.13 /usr/local/bin/python3.13; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
            command -v "$p"; return
        fi
    done
    echo "python3.13 not found (set PYTHON313=/path/to/python3.13)" >&2
    return 1
}

PY="$(find_python313)"
echo "Using $PY ($("$PY" --version))"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi

"$VENV/bin/python" -m pip install -qq --disable-pip-version-check \
    "local-bigquery==0.3.2" \
    "duckdb==1.5.5" \
    "duckdb-extension-icu==1.5.5" \
    "duckdb-extension-ducklake==1.5.5" \
    "duckdb-extension-spatial==1.5.5"

# Smoke check: the emulator package and the extensions import offline.
"$VENV/bin/python" - <<'PY'
import duckdb
import duckdb_extension_icu, duckdb_extension_ducklake, duckdb_extension_spatial  # noqa: F401
import local_bigquery  # noqa: F401
print("BigQuery emulator environment ready: duckdb", duckdb.__version__)
PY
