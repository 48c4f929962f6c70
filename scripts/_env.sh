# Sourced by the scripts in this folder: creates .venv once (or when pyproject.toml changes),
# installs kopt with its extras into it, and activates it. Works on a fresh machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
STAMP=".venv/.kopt-installed"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "Installing kopt and its dependencies into .venv (first run only; a few minutes)..."
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch is pinned in pyproject.toml (CPU build); jax installs its CPU build.
  .venv/bin/python -m pip install --quiet -e ".[test,examples,jax,torch]"
  echo "$WANT" > "$STAMP"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-}"
