"""Test set-up: pick the Keras backend before Keras is imported, seed everything.

Under TensorFlow every test runs. Under JAX or PyTorch (``KERAS_BACKEND=jax|torch``)
only the tests marked ``backends`` run: the rest (TFLite lowering, the Edge TPU checker)
need TensorFlow by nature.

End-to-end tests (whole pipelines, searches, real architectures, the TFMOT notebooks) carry the
``e2e`` marker: every ``slow`` test, and every test in :data:`E2E_FILES`. ``-m "not e2e"`` is the
quick loop.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()

#: Test files that exercise whole paths (optimize, the search, the CLI, TFLite round trips of real models).
E2E_FILES = {
    "test_api.py",
    "test_cli.py",
    "test_reliability.py",
    "test_guides.py",
    "test_runner.py",
    "test_search.py",
    "test_budget.py",
    "test_edgetpu_kopt_models.py",
    "test_collaborative_tflite.py",
    "test_distributed.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") or item.path.name in E2E_FILES:
            item.add_marker(pytest.mark.e2e)
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
