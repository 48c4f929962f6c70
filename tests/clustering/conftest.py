"""Fixtures shared by the clustering tests."""

from __future__ import annotations

import pytest

from tests.gradient_testing import layer_gradients


@pytest.fixture
def gradients():
    return layer_gradients
