#!/usr/bin/env bash
# Create or refresh the project's virtual environment.
# The venv is reused while requirements*.txt and pyproject.toml are unchanged (a stamp
# holds their hash) and its Python still runs; otherwise it is rebuilt from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
spec_hash=$(cat requirements.txt requirements-nodeps.txt pyproject.toml | sha256sum | cut -c1-16)
stamp="$VENV/.hmsa-spec-$spec_hash"

if [ -f "$stamp" ] && "$VENV/bin/python" -c "import hmsa, torch, kedro" >/dev/null 2>&1; then
    exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

start=$(date +%s)
if [ -d "$VENV" ] && ! "$VENV/bin/python" -c "import sys; sys.exit(sys.version_info[:2] != (3, 11))" >/dev/null 2>&1; then
    echo "[setup] $VENV is broken or not Python 3.11: recreating it"
    rm -rf "$VENV"
fi
if [ ! -d "$VENV" ]; then
    echo "[setup] creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
rm -f "$VENV"/.hmsa-spec-*
echo "[setup] installing pinned dependencies (pip; the torch wheels are large, this takes minutes)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements.txt
"$VENV/bin/python" -m pip install --quiet --no-deps -e .
# these are installed without their declared dependencies on purpose (see the file)
"$VENV/bin/python" -m pip install --quiet --no-deps -r requirements-nodeps.txt
nodeps=$(grep -v '^#' requirements-nodeps.txt | cut -d= -f1 | paste -sd'|')
if ! report=$("$VENV/bin/python" -m pip check 2>&1); then
    if echo "$report" | grep -v -E "^($nodeps) " | grep -q .; then
        echo "$report" >&2
        exit 1
    fi
fi
touch "$stamp"
echo "[setup] environment ready in $(( $(date +%s) - start )) s"
