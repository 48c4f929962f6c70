"""Per-test set-up: the lighter Keras reset of tests/keras_state.py (small models only)."""

from tests.keras_state import light_reset  # noqa: F401 - the autouse fixture named _seed
