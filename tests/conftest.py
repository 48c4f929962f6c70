"""Test set-up: pick the Keras backend before Keras is imported, seed everything.

Under TensorFlow every test runs. Under JAX or PyTorch (``KERAS_BACKEND=jax|torch``)
only the tests marked ``backends`` run: the rest (TFLite lowering, the Edge TPU checker)
need TensorFlow by nature.

End-to-end tests (whole pipelines, searches, real architectures, the TFMOT notebooks) carry the
``e2e`` marker: every ``slow`` test, and every test in :data:`E2E_FILES`. ``-m "not e2e"`` is the
quick loop.
"""

import gc
import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()

#: Test files (paths from the repository root) that exercise whole paths (optimize, the search, the CLI, TFLite
#: round trips of real models, README snippets, lowering in a child process, keras-hub backbones trained per backend).
E2E_FILES = {
    "tests/test_api.py",
    "tests/test_cli.py",
    "tests/test_reliability.py",
    "tests/tfmot/test_guides.py",
    "tests/pipeline/test_runner.py",
    "tests/search/test_search.py",
    "tests/search/test_budget.py",
    "tests/export/test_edgetpu_kopt_models.py",
    "tests/quantization/test_collaborative_tflite.py",
    "tests/distributed/test_distributed.py",
    "tests/hub/test_backends.py",
    "tests/hub/test_backbones.py",
    "tests/docs/test_readme.py",
    "tests/export/test_subprocess_lower.py",
}
ROOT = pathlib.Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # Keras' clear_session (after every test) and TensorFlow's TFLite converter call gc.collect(), which walks
    # every object alive: ~450,000 once TensorFlow is imported, 0.5-1.5 s a call. Modules and classes are never
    # garbage: they are frozen once the test modules are imported (pytest_collection_finish), so each collection
    # scans only the tests' own objects. TensorFlow is imported up front under every backend (JAX and PyTorch
    # tests lower through it too): imported by a test later, its ~200,000 objects would be scanned ever after.
    import kopt  # noqa: F401  (its modules belong to the frozen set too)

    try:
        import tensorflow  # noqa: F401
    except ImportError:  # a JAX- or PyTorch-only environment
        pass
    gc.freeze()
    # kopt's own warnings are errors unless a test expects them (``pytest.warns``) or says why it ignores them:
    # a warning nobody asserted is a no-op, a coverage gap or a wrong model that went unnoticed.
    config.addinivalue_line("filterwarnings", "error::kopt.core.errors.KoptWarning")


def pytest_collection_finish(session):
    gc.collect()
    gc.freeze()  # what importing the test modules added (scikit-learn, keras-hub, hypothesis, ...)


def pytest_collection_modifyitems(config, items):
    missing = sorted(path for path in E2E_FILES if not (ROOT / path).is_file())
    if missing:  # a renamed file would silently join the quick loop
        raise pytest.UsageError(f"tests/conftest.py E2E_FILES names files that do not exist: {missing}")
    for item in items:
        if item.get_closest_marker("slow") or item.path.relative_to(ROOT).as_posix() in E2E_FILES:
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
    keras.backend.clear_session(free_memory=False)  # collected once the test is over: pytest_runtest_protocol


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    yield
    # What survives a test (its fixtures are released by now) is long-lived: caches, module-scoped fixtures.
    # Collected once here, then frozen, so no later collection walks it again. Unfrozen, this heap grew through
    # a run until every collection (Keras' clear_session, the TFLite converter's) took ~4 s, even after a test
    # of pure Python. What is frozen here and dies later (a module fixture) is not freed: a few models a file.
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _no_leaked_registrations():
    """A test that registers a scheme or a technique by name must remove it: names are global, so a
    leaked one changes what later tests see (the policy schema test once failed only in suite order)."""
    import kopt
    from kopt.technique.registry import technique_names

    schemes, techniques = kopt.quantization.available_schemes(), technique_names()
    yield
    assert kopt.quantization.available_schemes() == schemes, "the test left a quantization scheme registered"
    assert technique_names() == techniques, "the test left a technique registered"
