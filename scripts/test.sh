#!/usr/bin/env bash
# The test suite: every test under the TensorFlow backend, then the backend-agnostic tests
# (marker `backends`) under JAX and PyTorch. Extra arguments go to every pytest run.
source "$(dirname "$0")/_env.sh"
status=0
for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@" || status=$?
done
exit $status
