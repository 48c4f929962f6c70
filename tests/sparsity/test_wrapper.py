"""PruneWrapper trained with model.fit on every backend: sparsity, strip, save/load, M:N, masking."""

import keras
import numpy as np
import pytest
from keras import ops

import kopt
from kopt.core.errors import UnsupportedLayerError
from kopt.sparsity import ConstantSparsity, PolynomialDecay, PruneWrapper, prune_low_magnitude

BACKENDS = pytest.mark.backends


def wrappers(model):
    return [layer for layer in model.layers if isinstance(layer, PruneWrapper)]


def image_model():
    """Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, Conv3D and Dense in one small model."""
    image, volume = keras.Input((8, 8, 4)), keras.Input((4, 4, 4, 2))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.SeparableConv2D(8, 3, padding="same")(x)
    x = keras.layers.Conv2DTranspose(8, 3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    v = keras.layers.Flatten()(keras.layers.Conv3D(4, 2)(volume))
    outputs = keras.layers.Dense(8)(keras.layers.Concatenate()([x, v]))
    data = [np.random.rand(64, 8, 8, 4).astype("float32"), np.random.rand(64, 4, 4, 4, 2).astype("float32")]
    return keras.Model([image, volume], outputs), data


def sequence_model():
    rnn = {"recurrent_initializer": "glorot_uniform"}  # the default orthogonal init is slow to compile on JAX
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(50, 8)(inputs)
    x = keras.layers.Conv1D(8, 3, padding="same")(x)
    x = keras.layers.LSTM(8, return_sequences=True, **rnn)(x)
    x = keras.layers.GRU(8, return_sequences=True, **rnn)(x)
    x = keras.layers.SimpleRNN(8, **rnn)(x)
    outputs = keras.layers.Dense(8)(x)
    return keras.Model(inputs, outputs), np.random.randint(0, 50, (64, 6)).astype("int32")


def fit(model, x, batches=8, epochs=1, callbacks=None):
    samples = len(x[0]) if isinstance(x, list) else len(x)
    y = np.random.rand(samples, *model.output_shape[1:]).astype("float32")
    if not model.compiled:
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(x, y, batch_size=samples // batches, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks)
    return model


SCHEDULE = PolynomialDecay(0.2, 0.6, begin_step=1, end_step=5, frequency=2)


@BACKENDS
@pytest.mark.parametrize("build", [image_model, sequence_model], ids=lambda f: f.__name__)
def test_every_layer_type_reaches_target_sparsity_and_strips_exactly(build):
    model, x = build()
    pruned = prune_low_magnitude(model, schedule=SCHEDULE)
    before = {w.name: [np.array(ops.convert_to_numpy(p.variable)) for p in w.pruned_weights] for w in wrappers(pruned)}
    fit(pruned, x)  # no callback: pruning advances inside the training step
    expected = {
        image_model: {"conv2d", "depthwise_conv2d", "separable_conv2d", "conv2d_transpose", "conv3d", "dense"},
        sequence_model: {"embedding", "conv1d", "lstm", "gru", "simple_rnn", "dense"},
    }[build]
    assert {w.layer.name for w in wrappers(pruned)} == expected
    for wrapper in wrappers(pruned):
        assert wrapper.step == 8
        for name, sparsity in wrapper.weight_sparsity().items():
            assert abs(sparsity - 0.6) <= 0.01, (wrapper.name, name, sparsity)
        # Gradients reached the real variables through the substitution.
        for weight, old, mask in zip(wrapper.pruned_weights, before[wrapper.name], wrapper.masks):
            new = np.asarray(ops.convert_to_numpy(weight.variable))
            kept = np.asarray(ops.convert_to_numpy(mask)) == 1
            assert not np.allclose(new[kept], old[kept]), (wrapper.name, weight.name)

    stripped = kopt.strip(pruned)
    assert not any(isinstance(layer, PruneWrapper) for layer in stripped.layers)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    dense = np.asarray(ops.convert_to_numpy(stripped.get_layer("dense").kernel))
    assert (dense == 0).mean() == pytest.approx(0.6, abs=0.01)


def test_masks_follow_schedule_and_only_grow():
    schedule = PolynomialDecay(0.0, 0.75, begin_step=1, end_step=6, frequency=2)
    wrapper = PruneWrapper(keras.layers.Dense(6), schedule=schedule)
    x = np.random.rand(4, 10).astype("float32")
    zeros_before = np.zeros((10, 6), bool)
    for step in range(8):
        wrapper(x, training=True)
        mask = np.asarray(ops.convert_to_numpy(wrapper.masks[0]))
        last_update = max([s for s in range(step + 1) if schedule.updates_at(s)], default=None)
        target = 0.0 if last_update is None else schedule.sparsity_at(last_update)
        assert (mask == 0).sum() == int(np.floor(np.float32(target) * 60 + 0.5)), step
        assert (mask == 0)[zeros_before].all(), "a pruned weight came back"
        zeros_before = mask == 0
    assert wrapper.step == 8
    assert (zeros_before.mean()) == pytest.approx(0.75, abs=1 / 60)


@BACKENDS
def test_inference_neither_counts_nor_updates():
    wrapper = PruneWrapper(keras.layers.Dense(4), schedule=ConstantSparsity(0.5, begin_step=0))
    x = np.random.rand(3, 8).astype("float32")
    wrapper(x)
    wrapper(x, training=False)
    assert wrapper.step == 0
    assert np.asarray(ops.convert_to_numpy(wrapper.masks[0])).all()
    wrapper(x, training=True)
    assert wrapper.step == 1 and wrapper.weight_sparsity()["kernel"] == 0.5


@BACKENDS
def test_save_load_round_trip_resumes_at_same_step(tmp_path):
    inputs = keras.Input((5, 4))
    lstm = keras.layers.LSTM(8, return_sequences=True, recurrent_initializer="glorot_uniform")
    hidden = lstm(keras.layers.Conv1D(8, 3, padding="same")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(hidden)))
    x = np.random.rand(64, 5, 4).astype("float32")
    schedule = PolynomialDecay(0.1, 0.7, begin_step=0, end_step=12, frequency=4)
    pruned = fit(prune_low_magnitude(model, schedule=schedule), x, batches=8)
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)  # no scope, no custom_objects, safe_mode on
    assert [type(layer).__name__ for layer in wrappers(loaded)] == ["PruneWrapper"] * 3
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(pruned(x)), rtol=1e-5, atol=1e-6)
    for old, new in zip(wrappers(pruned), wrappers(loaded)):
        assert new.step == old.step == 8
        assert new.schedule == schedule
        for a, b in zip(old.masks, new.masks):
            np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    fit(loaded, x, batches=8)  # steps 8..15: updates at 8 and 12 reach the final sparsity
    for wrapper in wrappers(loaded):
        assert wrapper.step == 16
        for sparsity in wrapper.weight_sparsity().values():
            assert abs(sparsity - 0.7) <= 0.01


@BACKENDS
def test_m_by_n_pattern_after_training():
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Conv2DTranspose(8, 3, padding="same")(x)
    x = keras.layers.Reshape((36, 8))(x)
    x = keras.layers.LSTM(8, recurrent_initializer="glorot_uniform")(x)
    outputs = keras.layers.Dense(4)(x)
    model = keras.Model(inputs, outputs)
    schedule = ConstantSparsity(0.5, 0, frequency=3)
    pruned, report = prune_low_magnitude(model, schedule=schedule, m_by_n=(2, 4), return_report=True)
    assert "depthwise_conv2d" in report.skipped
    fit(pruned, np.random.rand(32, 6, 6, 4).astype("float32"), batches=4)
    checked = 0
    for wrapper in wrappers(pruned):
        for weight, mask in zip(wrapper.pruned_weights, wrapper.masks):
            deployed = np.asarray(ops.convert_to_numpy(weight.variable)) * np.asarray(ops.convert_to_numpy(mask))
            groups = np.moveaxis(deployed, weight.input_axis, -1).reshape(-1, 4)
            assert ((groups == 0).sum(axis=1) >= 2).all(), (wrapper.name, weight.name)
            assert (groups == 0).mean() == pytest.approx(0.5, abs=1e-6)
            checked += 1
    assert checked == 5  # conv2d, conv2d_transpose, lstm kernel + recurrent kernel, dense


def test_keras_masking_reaches_a_wrapped_rnn():
    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(20, 8, mask_zero=True)(inputs)
    outputs = keras.layers.LSTM(4)(x)
    pruned = prune_low_magnitude(keras.Model(inputs, outputs), schedule=ConstantSparsity(0.5, 0))
    pruned(np.array([[3, 4, 5, 6, 7]]), training=True)  # prune once
    padded = pruned.predict(np.array([[3, 4, 0, 0, 0]]), verbose=0)
    # With masking the padded steps are skipped: the output equals a run that stops after 2 steps.
    lstm = [w for w in wrappers(pruned) if w.layer.name == "lstm"][0]
    embedding = [w for w in wrappers(pruned) if w.layer.name == "embedding"][0]
    two_steps = lstm(embedding(np.array([[3, 4]])))
    np.testing.assert_allclose(padded, ops.convert_to_numpy(two_steps), rtol=1e-5, atol=1e-6)


def test_shared_layer_counts_each_training_step_once():
    shared = keras.layers.Dense(8)
    a, b = keras.Input((8,)), keras.Input((8,))
    model = keras.Model([a, b], keras.layers.Add()([shared(a), shared(b)]))
    schedule = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=6, frequency=3)
    pruned = prune_low_magnitude(model, schedule=schedule)
    (wrapper,) = wrappers(pruned)
    assert wrapper.calls_per_step == 2
    x = np.random.rand(32, 8).astype("float32")
    pruned.compile("sgd", "mse")
    pruned.fit([x, x], x, batch_size=8, epochs=1, verbose=0)  # 4 steps: updates at 0 and 3
    assert wrapper.step == 4
    assert wrapper.weight_sparsity()["kernel"] == pytest.approx(schedule.sparsity_at(3), abs=1 / 64)
    stripped = kopt.strip(pruned)
    assert len(stripped.get_layer(shared.name)._inbound_nodes) == 2  # still one shared layer
    np.testing.assert_allclose(stripped.predict([x, x], verbose=0), pruned.predict([x, x], verbose=0), atol=1e-6)


def test_single_layer_wrapping():
    dense = prune_low_magnitude(keras.layers.Dense(4), schedule=ConstantSparsity(0.75, 0))
    model = keras.Sequential([keras.Input((8,)), dense])
    fit(model, np.random.rand(16, 8).astype("float32"), batches=2)
    assert dense.weight_sparsity() == {"kernel": 0.75}

    with pytest.raises(UnsupportedLayerError, match="input-channel count 6"):
        prune_low_magnitude(keras.layers.Dense(4), m_by_n=(2, 4))(np.ones((1, 6), "float32"))
    built = keras.layers.Dense(4)
    built.build((None, 6))
    with pytest.raises(UnsupportedLayerError, match="input-channel count 6"):
        prune_low_magnitude(built, m_by_n=(2, 4))
    lstm = keras.layers.LSTM(8)
    lstm.build((None, 3, 6))
    with pytest.warns(UserWarning, match="cell.kernel"):
        wrapper = prune_low_magnitude(lstm, m_by_n=(2, 4))
    assert [w.name for w in wrapper.pruned_weights] == ["cell.recurrent_kernel"]


def test_block_sparsity_in_training():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8)])
    pruned = prune_low_magnitude(model, schedule=ConstantSparsity(0.5, 0), block_size=(2, 4))
    fit(pruned, np.random.rand(16, 8).astype("float32"), batches=2)
    mask = np.asarray(ops.convert_to_numpy(wrappers(pruned)[0].masks[0]))
    blocks = mask.reshape(4, 2, 2, 4).sum(axis=(1, 3))
    assert set(np.unique(blocks)) == {0.0, 8.0} and mask.mean() == 0.5


def test_same_seed_same_stripped_weights():
    def run():
        keras.utils.set_random_seed(7)
        model, x = image_model()
        pruned = fit(prune_low_magnitude(model, schedule=SCHEDULE), x)
        return [np.asarray(w) for w in kopt.strip(pruned).get_weights()]

    first, second = run(), run()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@BACKENDS
def test_mixed_precision_prunes_and_infers():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        wrapper = PruneWrapper(keras.layers.Dense(4), schedule=ConstantSparsity(0.5, 0))
        x = np.random.rand(2, 8).astype("float32")
        wrapper(x, training=True)
        assert wrapper.weight_sparsity() == {"kernel": 0.5}  # torch once lost the mask in a float16 copy
        out = wrapper(x, training=False)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        kernel = np.asarray(ops.convert_to_numpy(wrapper.layer.kernel.value), "float32")
        mask = np.asarray(ops.convert_to_numpy(wrapper.masks[0].value))
        bias = np.asarray(ops.convert_to_numpy(wrapper.layer.bias.value), "float32")
        expected = x @ (kernel * mask) + bias
        np.testing.assert_allclose(np.asarray(ops.convert_to_numpy(out), "float32"), expected, atol=1e-2)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bidirectional_and_time_distributed_prune_and_strip():
    inputs = keras.Input((5, 8))
    gru = keras.layers.GRU(8, return_sequences=True, recurrent_initializer="glorot_uniform")
    x = keras.layers.TimeDistributed(keras.layers.Dense(8))(keras.layers.Bidirectional(gru)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    pruned = prune_low_magnitude(model, schedule=ConstantSparsity(0.5, 0))
    fit(pruned, np.random.rand(16, 5, 8).astype("float32"), batches=2)
    sparsities = {w.layer.name: w.weight_sparsity() for w in wrappers(pruned)}
    assert sparsities["bidirectional"] == {
        "forward_layer.cell.kernel": 0.5, "forward_layer.cell.recurrent_kernel": 0.5,
        "backward_layer.cell.kernel": 0.5, "backward_layer.cell.recurrent_kernel": 0.5,
    }
    assert sparsities["time_distributed"] == {"layer.kernel": 0.5}
    x = np.random.rand(4, 5, 8).astype("float32")
    np.testing.assert_allclose(kopt.strip(pruned).predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)
