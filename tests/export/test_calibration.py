"""Representative data of every accepted form becomes the same bounded stack of samples."""

import numpy as np
import pytest

from kopt.core.errors import InvalidArgumentError
from kopt.export.calibration import DEFAULT_CALIBRATION_SAMPLES, InputSpec, batches, materialize

pytestmark = pytest.mark.backends

ONE = [InputSpec("x", (3, 2), "float32")]
TWO = [InputSpec("a", (4,), "float32"), InputSpec("b", (2,), "float32")]


def _samples(n, shape=(3, 2), seed=0):
    return np.random.default_rng(seed).normal(size=(n,) + shape).astype("float32")


def test_array_and_generators_give_the_same_samples():
    x = _samples(10)
    y = np.arange(10)
    forms = [
        x,
        list(x),  # an iterable of single samples
        (x[i : i + 3] for i in range(0, 10, 3)),  # a generator of batches
        ((x[i : i + 4], y[i : i + 4]) for i in range(0, 10, 4)),  # (x, y) batches
        ((x[i : i + 2], y[i : i + 2], np.ones(2)) for i in range(0, 10, 2)),  # (x, y, w)
        lambda: ([row[None]] for row in x),  # TF's representative_dataset convention
        ({"x": row} for row in x),
    ]
    for data in forms:
        (got,) = materialize(data, ONE)
        np.testing.assert_array_equal(got, x)


def test_at_most_limit_samples_are_read():
    pulled = []

    def endless():
        while True:
            pulled.append(1)
            yield _samples(1)[0]

    (got,) = materialize(endless(), ONE)
    assert len(got) == DEFAULT_CALIBRATION_SAMPLES == len(pulled)
    (got,) = materialize(_samples(500), ONE, limit=7)
    assert got.shape == (7, 3, 2)


def test_multi_input_forms():
    a, b = _samples(6, (4,), 1), _samples(6, (2,), 2)
    expected = [a, b]
    for data in ([a, b], {"a": a, "b": b}, (([a[i : i + 2], b[i : i + 2]], None) for i in range(0, 6, 2))):
        got = materialize(data, TWO)
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
    feeds = list(batches(expected, ["a", "b"]))
    assert len(feeds) == 6 and feeds[0]["a"].shape == (1, 4) and feeds[0]["b"].shape == (1, 2)


def test_dtype_is_the_input_dtype():
    (got,) = materialize(_samples(2).astype("float64"), ONE)
    assert got.dtype == np.float32


def test_tf_dataset():
    tf = pytest.importorskip("tensorflow")
    x = _samples(9)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(9))).batch(4)
    (got,) = materialize(dataset, ONE)
    np.testing.assert_allclose(got, x)


def test_errors_name_the_input():
    with pytest.raises(ValueError, match="'x'.*\\(3, 2\\)"):
        materialize(np.zeros((5, 2, 2)), ONE)
    with pytest.raises(ValueError, match="no samples"):
        materialize(iter([]), ONE)
    with pytest.raises(ValueError, match="'b'"):
        materialize({"a": np.zeros((2, 4))}, TWO)
    with pytest.raises(TypeError, match="representative_data"):
        materialize(42, ONE)
    with pytest.raises(ValueError, match=">= 1"):
        materialize(np.zeros((2, 3, 2)), ONE, limit=0)
    with pytest.raises(InvalidArgumentError, match="'x' is empty: calibration needs samples"):
        materialize(np.zeros((0, 3, 2)), ONE)  # issue 23: was NotFullyIntegerError after the conversion


def test_fit_style_tuples_are_read_as_x_for_a_single_input_model():
    x, y = _samples(10), np.arange(10)
    forms = [
        (x, y),
        [x, y],  # y's shape differs from x's: not a list of two batches
        (x, y, np.ones(10)),
        (x, None),
        (x, {"a": y, "b": y[:, None]}),  # several outputs
        (x, x),  # an autoencoder's (x, x): a tuple is (x, y) as model.fit reads it
    ]
    for data in forms:
        (got,) = materialize(data, ONE)
        np.testing.assert_array_equal(got, x)
    (got,) = materialize([x[:4], x[4:]], ONE)  # a list of batches keeps its meaning
    np.testing.assert_array_equal(got, x)
    (got,) = materialize([x, x], ONE)
    assert len(got) == 20


def test_fit_style_tuples_for_multi_input_models():
    a, b, y = _samples(6, (4,), 1), _samples(6, (2,), 2), np.arange(6)
    for data in (([a, b], y), ({"a": a, "b": b}, y), ((a, b), y, np.ones(6))):
        got = materialize(data, TWO)
        np.testing.assert_array_equal(got[0], a)
        np.testing.assert_array_equal(got[1], b)


def test_tf_dataset_of_x_y_pairs_for_a_single_input_model():
    tf = pytest.importorskip("tensorflow")
    x, y = _samples(7), np.arange(7)
    for dataset in (tf.data.Dataset.from_tensor_slices((x, y)), tf.data.Dataset.from_tensor_slices((x, y)).batch(3)):
        (got,) = materialize(dataset, ONE)
        np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize(
    "data, spec, message",
    [
        ((np.zeros((4, 3, 3)), np.arange(4)), ONE[0], "samples of shape \\(3, 3\\); the model expects \\(3, 2\\)"),
        ((b for b in [np.zeros((2, 3, 2)), np.zeros((2, 5))]), ONE[0], "samples of shape \\(2, 5\\)"),
        (np.array([["a", "b"]] * 3).reshape(1, 3, 2), ONE[0], "dtype <U1; the model expects float32 numbers"),
        (np.full((2, 3, 2), np.nan), ONE[0], "NaN or Inf"),
        (np.array([[1.5, 2.0, 3.0]]), InputSpec("ids", (3,), "int32"), "fractional values.*int32"),
        (np.array([[300, 2, 3]]), InputSpec("pixels", (3,), "uint8"), "\\[2, 300\\].*uint8"),
        (["ab", "cd"], ONE[0], "gives a scalar"),
    ],
    ids=["shape", "one-bad-batch", "strings", "nan", "fractional-ids", "out-of-range", "scalars"],
)
def test_wrong_shape_or_dtype_is_a_clear_error(data, spec, message):
    from kopt.core.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=message) as info:
        materialize(data, [spec])
    assert f"'{spec.key}'" in str(info.value) or "scalar" in str(info.value)


def test_integral_floats_cast_to_integer_inputs():
    (got,) = materialize(np.array([[1.0, 2.0, 3.0]]), [InputSpec("ids", (3,), "int32")])
    assert got.dtype == np.int32 and got.tolist() == [[1, 2, 3]]
