"""Combine per-replica statistics that layers fold into their state inside ``call``.

Three ways a kopt model trains on several devices, and what a batch statistic means in each:

* ``tf.distribute`` (TensorFlow backend, e.g. ``MirroredStrategy``): ``call`` runs once per
  replica on that replica's slice of the global batch, so ``min(x)`` is the replica's own.
  State computed from it must be reduced across replicas before it is assigned, or each
  replica keeps a different value (Keras' default ``aggregation="none"``) and the model
  ends up with replica 0's. ``BatchNormalization(synchronized=True)`` solves the same
  problem for its moments with an all-reduce; this module does it for extremes.
* ``keras.distribution`` (JAX backend, ``DataParallel``): the train step is one SPMD
  program written for the global batch, so ``min(x)`` already is the global minimum.
* one device: nothing to combine.

Only the first case needs work, and it needs TensorFlow's replica context, so the helpers
are the identity on every other backend and outside a multi-replica step.
"""

from __future__ import annotations

from typing import Any

import keras


def _replica_context() -> Any:
    """TensorFlow's replica context when ``call`` runs in a step of several replicas, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return None
    context = tf.distribute.get_replica_context()  # None in cross-replica context
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def cross_replica_extremes(low: Any, high: Any) -> tuple[Any, Any]:
    """``(min of low, max of high)`` over the replicas of the running step.

    ``tf.distribute.ReduceOp`` has no MIN/MAX, so the pair is all-gathered (``2 * replicas``
    floats) and reduced locally; every replica then holds the same result, which is what a
    single device computes on the global batch. Scalars in, scalars out.
    """
    context = _replica_context()
    if context is None:
        return low, high
    import tensorflow as tf

    pair = tf.reshape(tf.stack([-tf.cast(low, "float32"), tf.cast(high, "float32")]), (1, 2))
    gathered = context.all_gather(pair, axis=0)  # (replicas, 2)
    top = tf.reduce_max(gathered, axis=0)
    return tf.cast(-top[0], low.dtype), tf.cast(top[1], high.dtype)
