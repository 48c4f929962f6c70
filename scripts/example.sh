#!/usr/bin/env bash
# The main job on the bundled example: train a CNN on scikit-learn's digits, optimize it with kopt,
# write int8 .tflite files and a report to examples/output/. Extra arguments go to the example.
# Installs only what the example needs (TensorFlow, scikit-learn, matplotlib): no JAX, PyTorch or test tools.
KOPT_EXTRAS=examples source "$(dirname "$0")/_env.sh"
KERAS_BACKEND="${KERAS_BACKEND:-tensorflow}" python examples/digits_pipeline.py --out examples/output "$@"
