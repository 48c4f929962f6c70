"""Sparsity- and cluster-preserving QAT (PQAT, CQAT, PCQAT) in Keras, on every backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import kopt
from kopt.clustering import recover_clusters
from kopt.clustering.layout import to_matrix_np
from kopt.clustering.recover import Clusters
from kopt.quantization import (
    ClusterPreservingQuantizer,
    NotClusteredError,
    SparsityPreservingQuantizer,
    WeightQuantizer,
    available_schemes,
    cluster_preserve_scheme,
    quantize_model,
)
from kopt.quantization.preserve import cluster_layout
from kopt.quantization.quantizers import deserialize, serialize
from tests.quantization.preserve_testing import (
    all_kinds_model,
    channel_axes,
    cluster_np,
    deployed_kernel,
    effective_kernel,
    fit,
    max_unique_per_channel,
    regression_data,
    structure,
    wrappers,
)

CLUSTERS = 5
SPARSITY = 0.5


def _kernels(model):
    return {layer.name: np.array(keras.ops.convert_to_numpy(layer.kernel)) for layer in model.layers if hasattr(layer, "kernel") and not isinstance(layer, layers.BatchNormalization)}


_TRAINED: dict[tuple, tuple[dict, keras.Model]] = {}


def trained(scheme: str, batch_norm: bool, per_channel: bool = False) -> tuple[dict, keras.Model]:
    """``(structured kernels by layer, quantized model after two training steps)``, once per session:
    PQAT gets a pruned model, CQAT a clustered one, PCQAT a pruned then clustered one."""
    key = (keras.backend.backend(), scheme, batch_norm, per_channel)
    if key not in _TRAINED:
        keras.utils.set_random_seed(5)
        sparsity = SPARSITY if "prune" in scheme else 0.0
        clusters = CLUSTERS if "cluster" in scheme else None
        model = structure(all_kinds_model(batch_norm), sparsity=sparsity, clusters=clusters, per_channel=per_channel)
        chosen = cluster_preserve_scheme(per_channel=True) if per_channel else scheme
        _TRAINED[key] = (_kernels(model), fit(quantize_model(model, chosen)))
    return _TRAINED[key]


@pytest.mark.backends
def test_schemes_are_registered():
    assert {"prune_preserve", "cluster_preserve", "prune_cluster_preserve"} <= set(available_schemes())


# ----------------------------------------------------------------------- PQAT
@pytest.mark.backends
@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "folded_bn"])
def test_pqat_zeros_stay_exactly_zero_through_training_and_strip(batch_norm):
    pruned, quantized = trained("prune_preserve", batch_norm)
    found = wrappers(quantized)
    assert set(found) == set(pruned)  # every Conv1D/Conv2D/Depthwise/Dense, also those before a standalone ReLU
    assert sum(isinstance(w, kopt.quantization.FoldedBatchNorm) for w in found.values()) == (4 if batch_norm else 0)
    stripped = wrappers(kopt.strip(quantized))
    for name, before in pruned.items():
        zeros = before == 0
        wrapper = found[name]
        assert isinstance(wrapper.weight_quantizer("kernel"), SparsityPreservingQuantizer)
        effective = effective_kernel(wrapper)
        assert np.all(effective[zeros] == 0), name
        assert np.all(deployed_kernel(wrapper)[zeros] == 0), name  # folded + fake-quantized
        assert np.all(deployed_kernel(stripped[name])[zeros] == 0), name
        assert not np.allclose(effective[~zeros], before[~zeros]), f"{name} did not train"
        raw = np.asarray(keras.ops.convert_to_numpy(wrapper.layer.kernel))
        assert np.all(raw[zeros] == 0), name  # no gradient reaches the masked entries either


@pytest.mark.backends
def test_pqat_without_zeros_computes_like_plain_qat():
    model = all_kinds_model(batch_norm=True)
    x, _ = regression_data(model, 8)
    plain = quantize_model(model, "default_8bit")
    preserving = quantize_model(model, "prune_preserve")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(preserving(x)), keras.ops.convert_to_numpy(plain(x)), rtol=1e-5, atol=1e-6
    )


# ----------------------------------------------------------------------- CQAT
@pytest.mark.backends
@pytest.mark.parametrize(
    "batch_norm,per_channel", [(True, False), (False, True)], ids=["folded_bn_per_tensor", "plain_per_channel"]
)
def test_cqat_trains_centroids_and_keeps_the_clusters(batch_norm, per_channel):
    # per-channel clusters of these small kernels fit one per-tensor table too: the layout is forced
    clustered, quantized = trained("cluster_preserve", batch_norm, per_channel)
    for name, wrapper in wrappers(quantized).items():
        layer = wrapper.layer
        quantizer = wrapper.weight_quantizer("kernel")
        assert isinstance(quantizer, ClusterPreservingQuantizer)
        axes = channel_axes(layer)
        values = clustered[name]
        assert quantizer.per_channel is per_channel
        expected_k = max_unique_per_channel(values, axes) if per_channel else np.unique(values).size
        assert quantizer.number_of_clusters == expected_k
        state = wrapper._quantizer_state["kernel"]
        assert state["centroids"].trainable and not state["cluster_indices"].trainable
        assert not layer.kernel.trainable  # the centroids train instead
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), values)
        # the layer computes with centroids[indices], indices as recovered from the clustered kernel
        recovered = recover_clusters(values, quantizer.axes_for(values.ndim))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(state["cluster_indices"]), recovered.indices)
        centroids = np.asarray(keras.ops.convert_to_numpy(state["centroids"]))
        assert not np.allclose(centroids, recovered.centroids), f"{name}: centroids did not train"
        expected = Clusters(centroids, recovered.indices, recovered.channel_axes).values()
        np.testing.assert_allclose(effective_kernel(wrapper), expected, rtol=0, atol=0)
        # the structure survives training, folding and fake-quant: at most K values per output channel
        assert max_unique_per_channel(effective_kernel(wrapper), axes) <= CLUSTERS, name
        assert max_unique_per_channel(deployed_kernel(wrapper), axes) <= CLUSTERS, name


@pytest.mark.backends
def test_pcqat_keeps_zeros_and_clusters():
    clustered, quantized = trained("prune_cluster_preserve", batch_norm=True)
    for name, wrapper in wrappers(quantized).items():
        zeros = clustered[name] == 0
        assert zeros.mean() >= SPARSITY - 0.01
        quantizer = wrapper.weight_quantizer("kernel")
        assert isinstance(quantizer, ClusterPreservingQuantizer) and quantizer.preserve_sparsity
        deployed = deployed_kernel(wrapper)
        assert np.all(deployed[zeros] == 0) and np.all(effective_kernel(wrapper)[zeros] == 0), name
        assert max_unique_per_channel(deployed, channel_axes(wrapper.layer)) <= CLUSTERS, name


# ------------------------------------------------------------------- saving
@pytest.mark.backends
@pytest.mark.parametrize("scheme", ["prune_preserve", "cluster_preserve", "prune_cluster_preserve"])
def test_saved_keras_file_loads_with_identical_predictions(scheme, tmp_path):
    _, quantized = trained(scheme, batch_norm=scheme != "prune_preserve")  # models other tests trained
    path = tmp_path / f"{scheme}.keras"
    quantized.save(path)
    loaded = keras.saving.load_model(path)  # safe mode, no custom objects
    x, _ = regression_data(quantized, 8, seed=3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(quantized(x)))
    for name, wrapper in wrappers(loaded).items():
        np.testing.assert_array_equal(deployed_kernel(wrapper), deployed_kernel(wrappers(quantized)[name]))
        assert type(wrapper.weight_quantizer("kernel")) is type(wrappers(quantized)[name].weight_quantizer("kernel"))


# ---------------------------------------------------------- bad input, layout
@pytest.mark.backends
def test_unclustered_model_is_refused_naming_the_layer():
    inputs = keras.Input((300,))
    unclustered = keras.Model(inputs, layers.Dense(4, name="wide")(inputs))  # 300 distinct values per channel
    with pytest.raises(NotClusteredError, match=r"Layer 'wide' \(Dense\), weight 'kernel', is not clustered: one of its output channels has 300"):
        quantize_model(unclustered, "cluster_preserve")
    # a small unclustered layer passes as is (each value its own centroid), unless max_clusters says otherwise
    model = all_kinds_model(batch_norm=False)
    quantize_model(model, "cluster_preserve")
    strict = cluster_preserve_scheme(max_clusters=CLUSTERS)
    with pytest.raises(NotClusteredError, match=r"Layer 'conv2d' .*max_clusters=5"):
        quantize_model(model, strict)
    clustered = structure(all_kinds_model(batch_norm=False), clusters=CLUSTERS)
    quantize_model(clustered, strict)  # exactly as many values as allowed: fine


@pytest.mark.backends
def test_cluster_layout_detects_per_tensor_and_per_channel():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 40, 40)).astype("float32")
    per_tensor = cluster_np(kernel, 8)
    per_channel = cluster_np(kernel, 8, axes=(-1,))
    assert cluster_layout(per_tensor, (-1,)) == (False, 8)
    assert cluster_layout(per_channel, (-1,)) == (True, 8)  # 8 * 40 > 256 distinct values in the tensor
    assert cluster_layout(per_channel, (-1,), per_channel=True) == (True, 8)
    assert cluster_layout(per_tensor, None) == (False, 8)  # no channel axis: per tensor only
    with pytest.raises(NotClusteredError, match="one of its output channels has 360 distinct values"):
        cluster_layout(kernel, (-1,))


@pytest.mark.backends
def test_quantizer_built_on_an_unclustered_kernel_starts_from_even_centroids():
    """Documented behaviour (also the path of a model being loaded: built on fresh weights)."""
    layer = layers.Dense(6)
    layer.build((None, 20))
    values = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
    quantizer = ClusterPreservingQuantizer(WeightQuantizer(per_channel=False), number_of_clusters=4, per_channel=True)
    centroids, indices = quantizer.initial_clusters(values)
    assert centroids.shape == (6, 4) and indices.shape == values.shape
    np.testing.assert_allclose(centroids[:, 0], values.min(axis=0))
    np.testing.assert_allclose(centroids[:, -1], values.max(axis=0), rtol=1e-6)
    snapped = np.take_along_axis(centroids.T, to_matrix_np(indices, (-1,)), axis=0)
    assert np.all(np.abs(snapped - values) <= (values.max(0) - values.min(0)) / 6 + 1e-6)  # nearest of 4


@pytest.mark.backends
def test_quantizer_configs_round_trip():
    for quantizer in (
        SparsityPreservingQuantizer(WeightQuantizer(per_channel=True, channel_dims=2)),
        ClusterPreservingQuantizer(WeightQuantizer(4), number_of_clusters=9, per_channel=True, channel_axes=(-2, -1), preserve_sparsity=True),
    ):
        restored = deserialize(serialize(quantizer))
        assert restored == quantizer and restored.quantizer == quantizer.quantizer
    with pytest.raises(ValueError, match="number_of_clusters must be >= 1"):
        ClusterPreservingQuantizer(number_of_clusters=0)
