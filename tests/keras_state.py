"""A lighter per-test reset for folders of small-model tests (their conftest imports it).

``keras.backend.clear_session()`` defaults to ``free_memory=True``, a ``gc.collect()`` that
costs 0.3-0.7 s per test here with TensorFlow, JAX and torch all imported; tests that build
small models only need Keras' global state reset. Named ``_seed`` so it replaces the set-up of
tests/conftest.py in the folders that use it.
"""

import keras
import pytest


@pytest.fixture(autouse=True, name="_seed")
def light_reset():
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session(free_memory=False)
