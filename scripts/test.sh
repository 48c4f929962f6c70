#!/usr/bin/env bash
# The test suite: every test under the TensorFlow backend, then the backend-agnostic tests
# (marker `backends`) under JAX and PyTorch, those two side by side (each is mostly
# single-threaded compilation; their logs are printed in order when both are done).
# Extra arguments go to every pytest run.
source "$(dirname "$0")/_env.sh"
status=0
echo "=== KERAS_BACKEND=tensorflow"
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider "$@" || status=$?

logs="$(mktemp -d)"
pids=()
for backend in jax torch; do
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@" > "$logs/$backend.log" 2>&1 &
  pids+=($!)
done
for i in 0 1; do
  backend=$([ "$i" = 0 ] && echo jax || echo torch)
  wait "${pids[$i]}" || status=$?
  echo "=== KERAS_BACKEND=$backend"
  cat "$logs/$backend.log"
done
rm -rf "$logs"
exit $status
