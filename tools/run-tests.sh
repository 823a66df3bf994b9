#!/usr/bin/env bash
# Run the whole test suite, installing what it needs first.
#   tools/run-tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
echo "== installing rtmig-nova and its test requirements"
"$PY" -m pip install --quiet --disable-pip-version-check \
    -r requirements.txt -r test-requirements.txt
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps -e .
echo "== running the tests"
exec "$PY" -m pytest tests "$@"
