#!/usr/bin/env bash
# The test suite: every test under the TensorFlow backend and the backend-agnostic tests
# (marker `backends`) under JAX and PyTorch. The three passes run side by side (each leaves
# cores idle for long stretches: compilation, subprocesses); their logs are printed in order
# when all are done. Extra arguments go to every pytest run.
source "$(dirname "$0")/_env.sh"
status=0
backends=(tensorflow jax torch)
logs="$(mktemp -d)"
pids=()
for backend in "${backends[@]}"; do
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@" > "$logs/$backend.log" 2>&1 &
  pids+=($!)
done
for i in "${!backends[@]}"; do
  wait "${pids[$i]}" || status=$?
  echo "=== KERAS_BACKEND=${backends[$i]}"
  cat "$logs/${backends[$i]}.log"
done
rm -rf "$logs"
exit $status
