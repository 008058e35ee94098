#!/usr/bin/env bash
# Sets up lopt and runs the main job on its built-in default.
# Usage: bash scripts/main.sh [extra arguments for `lopt train`]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${LOPT_VENV:-.venv}/bin/lopt" train "$@"
