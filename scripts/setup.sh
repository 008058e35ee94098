#!/usr/bin/env bash
# Sets up lopt on a fresh machine: system packages (offline datasets), a virtualenv, the package.
# Idempotent: re-running skips what is already there. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="dataset-fashion-mnist fortunes-min fortunes wordnet-base"
VENV="${LOPT_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

missing=""
for pkg in $APT_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then
      if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    fi
    echo "[setup] installing system packages:$missing"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing; } >/tmp/lopt-apt.log 2>&1; then
      echo "[setup] WARNING: could not install$missing (see /tmp/lopt-apt.log); lopt falls back to" \
           "scikit-learn's digits where Fashion-MNIST is missing." >&2
    fi
  else
    echo "[setup] WARNING: no apt-get; install Fashion-MNIST's IDX files yourself and set" \
         "LOPT_FASHION_MNIST_DIR (lopt falls back to scikit-learn's digits)." >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    echo "[setup] python venv module missing; installing python3-venv" >&2
    ${SUDO:-} apt-get install -y -qq python3-venv >/dev/null
    "$PYTHON" -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
echo "[setup] installing lopt and its dependencies into $VENV"
if ! "$VENV/bin/python" -m pip install -q -e ".[test]" >/tmp/lopt-pip.log 2>&1; then
  cat /tmp/lopt-pip.log >&2
  echo "[setup] ERROR: pip install failed (log above)" >&2
  exit 1
fi

# PyTorch for lopt.torch's tests: exactly this CPU build (a plain `pip install torch` pulls a
# multi-GB CUDA build). Optional: if it cannot be installed, the lopt.torch tests skip.
TORCH_VERSION="${LOPT_TORCH_VERSION:-2.13.0}"
if ! "$VENV/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" >/dev/null 2>&1; then
  echo "[setup] installing torch==$TORCH_VERSION into $VENV (for lopt.torch)"
  if ! "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" >/tmp/lopt-torch-pip.log 2>&1; then
    echo "[setup] WARNING: could not install torch==$TORCH_VERSION (see /tmp/lopt-torch-pip.log);" \
         "the lopt.torch tests will be skipped." >&2
  fi
fi
"$VENV/bin/python" -c "import lopt, jax; print(f'[setup] lopt {lopt.__version__}, jax {jax.__version__} on {jax.default_backend()}')"
"$VENV/bin/python" -c "import torch; print(f'[setup] torch {torch.__version__}')" 2>/dev/null || true
