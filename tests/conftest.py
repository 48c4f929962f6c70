"""Test set-up: pick the Keras backend before Keras is imported, seed everything.

Under TensorFlow every test runs. Under JAX or PyTorch (``KERAS_BACKEND=jax|torch``)
only the tests marked ``backends`` run: the rest (TFLite lowering, the Edge TPU checker)
need TensorFlow by nature.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_collection_modifyitems(config, items):
    if BACKEND == "tensorflow":
        return
    selected = [item for item in items if item.get_closest_marker("backends")]
    deselected = [item for item in items if not item.get_closest_marker("backends")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()
