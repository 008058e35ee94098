#!/usr/bin/env bash
# Sets up lopt and runs the whole test suite (2 pytest workers).
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
"${LOPT_VENV:-.venv}/bin/python" -m pytest -n 2 -q "$@"
status=$?
set -e
if [ "$status" = "5" ]; then
  echo "pytest collected no tests: that is a failure for this project" >&2
  exit 1
fi
exit "$status"
