#!/usr/bin/env bash
# The test suite: ruff, then every test under the TensorFlow backend and the backend-agnostic tests
# (marker `backends`) under JAX and PyTorch. The three passes run side by side (each leaves cores idle
# for long stretches: compilation, subprocesses); a progress line per backend is printed every minute,
# and the full logs in order when all are done. The TensorFlow pass, which runs every test, is split over
# KOPT_TEST_WORKERS pytest-xdist workers (default 2; a file's tests stay in one worker). KOPT_TEST_BACKENDS
# picks the passes (default "tensorflow jax torch"). Extra arguments go to every pytest run; the quick loop is
#   KOPT_TEST_BACKENDS=tensorflow bash scripts/test.sh -m "not e2e"
KOPT_EXTRAS=test,examples,jax,torch source "$(dirname "$0")/_env.sh"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
echo "=== ruff check"
ruff check kopt tests benchmarks examples
status=0
read -r -a backends <<< "${KOPT_TEST_BACKENDS:-tensorflow jax torch}"
for backend in "${backends[@]}"; do
  case "$backend" in tensorflow|jax|torch) ;; *) echo "KOPT_TEST_BACKENDS: unknown backend '$backend' (tensorflow, jax, torch)" >&2; exit 2;; esac
done
logs="$(mktemp -d)"
pids=()
workers="${KOPT_TEST_WORKERS:-2}"
for backend in "${backends[@]}"; do
  split=()
  if [ "$backend" = tensorflow ] && [ "$workers" -gt 1 ]; then split=(-n "$workers" --dist loadfile); fi
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "${split[@]}" "$@" > "$logs/$backend.log" 2>&1 &
  pids+=($!)
done
progress() {
  local line="" backend
  for backend in "${backends[@]}"; do
    line+="$backend $(grep -o '\[ *[0-9]*%\]' "$logs/$backend.log" 2>/dev/null | tail -n 1 | tr -d ' ' || true)  "
  done
  echo "[$(date +%H:%M:%S)] $line"
}
( while sleep 60; do progress; done ) &
monitor=$!
for i in "${!backends[@]}"; do
  wait "${pids[$i]}" || status=$?
done
kill "$monitor" 2>/dev/null || true
for backend in "${backends[@]}"; do
  echo "=== KERAS_BACKEND=$backend"
  cat "$logs/$backend.log"
done
rm -rf "$logs"
exit $status
