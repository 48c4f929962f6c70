# Sourced by the scripts in this folder: creates .venv once, installs kopt with the extras the calling
# script needs (KOPT_EXTRAS, comma-separated; default: everything the test suite needs) and activates it.
# Reinstalls when pyproject.toml changes or an extra is missing; an extra installed once stays. Works on a
# fresh machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
EXTRAS="${KOPT_EXTRAS:-test,examples,jax,torch}"
# A .venv without a working pip (a first run interrupted while creating it) is made again.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version > /dev/null 2>&1; then
  rm -rf .venv
  "$PYTHON" -m venv .venv
fi
STAMP=".venv/.kopt-installed"   # line 1: hash of pyproject.toml; then one installed extra per line
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
missing=""
if [ ! -f "$STAMP" ] || [ "$(head -n 1 "$STAMP")" != "$WANT" ]; then
  printf '%s\n' "$WANT" > "$STAMP.new"
  missing="$EXTRAS"
else
  cp "$STAMP" "$STAMP.new"
  for extra in ${EXTRAS//,/ }; do
    grep -qx "$extra" "$STAMP" || missing+="${missing:+,}$extra"
  done
fi
if [ -n "$missing" ]; then
  echo "Installing kopt with [$missing] into .venv (first run only; a few minutes)..."
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch is pinned in pyproject.toml (CPU build); jax installs its CPU build.
  .venv/bin/python -m pip install --quiet -e ".[$missing]"
  tr ',' '\n' <<< "$missing" >> "$STAMP.new"
fi
mv "$STAMP.new" "$STAMP"
# shellcheck disable=SC1091
source .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-}"
