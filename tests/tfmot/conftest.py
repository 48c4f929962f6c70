"""Same per-test set-up as tests/conftest.py, without the full garbage collection.

``keras.backend.clear_session()`` defaults to ``free_memory=True``, a ``gc.collect()`` that
costs 0.3-0.7 s per test here with TensorFlow, JAX and torch all imported; these tests build
small models, so resetting Keras' global state is enough.
"""

import keras
import pytest


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session(free_memory=False)
