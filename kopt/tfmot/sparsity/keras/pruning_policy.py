"""TFMOT's pruning policies: which layers a model prunes, checked before wrapping.

:class:`PruneForLatencyOnXNNPack` prunes only 1x1 Conv2D layers, the ops XNNPACK's sparse
inference accelerates (Fast Sparse ConvNets, Elsen et al. 2019), and checks the structure
XNNPACK needs: each input branch starts with ZeroPadding2D(1) -> Conv2D 3x3 stride 2 'valid'
on 3 input channels, each output branch ends in GlobalAveragePooling2D(keepdims=True), and
every layer between them is one XNNPACK's sparse subgraph supports. The model is walked
through kopt's graph analyzer (Keras 3 has no inbound/outbound node lists to follow).
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import keras

from kopt.core.errors import (
    InvalidArgumentError,
    UnsupportedLayerError,
    UnsupportedModelError,
)
from kopt.graph import ModelGraph, analyze


class PruningPolicy(abc.ABC):
    """Decides which layers of a model ``prune_low_magnitude`` wraps, and checks the model first."""

    @abc.abstractmethod
    def allow_pruning(self, layer: keras.layers.Layer) -> bool:
        """Whether ``layer`` gets a pruning wrapper."""

    @abc.abstractmethod
    def ensure_model_supports_pruning(self, model: keras.Model) -> None:
        """Raise a ValueError (a kopt error) when the model does not fit the policy."""


def _pair(value: object) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prune only 1x1 Conv2D layers, in a model XNNPACK's sparse inference can run."""

    def allow_pruning(self, layer: keras.layers.Layer) -> bool:
        return isinstance(layer, keras.layers.Conv2D) and _pair(layer.kernel_size) == (1, 1)

    # ------------------------------------------------------------------ checks
    def ensure_model_supports_pruning(self, model: keras.Model) -> None:
        if not isinstance(model, keras.Model):
            raise UnsupportedModelError(f"{type(self).__name__} checks a keras.Model, got {type(model).__name__}.")
        graph = analyze(model)  # raises for subclassed or unbuilt models
        starts = self._search(graph, list(graph.inputs), lambda n: self._is_start(graph, n), graph.consumers)
        if not starts:
            raise InvalidArgumentError(
                f"Model {model.name!r}: {type(self).__name__} needs every input branch to begin with "
                "ZeroPadding2D(padding=1) -> Conv2D 3x3, strides 2, padding 'valid', on 3 input channels; "
                "none found."
            )
        ends = self._search(graph, [node for node, _ in graph.outputs], lambda n: self._is_end(graph, n), graph.producers)
        if not ends:
            raise InvalidArgumentError(
                f"Model {model.name!r}: {type(self).__name__} needs a GlobalAveragePooling2D(keepdims=True) on every "
                "output branch; none found."
            )

        def inside(node: str) -> bool:
            if node in ends:
                return True
            layer = graph.layer(node)
            if not self._supported(graph, node):
                raise UnsupportedLayerError(
                    f"Layer {getattr(layer, 'name', node)!r} ({type(layer).__name__}) is not supported by the "
                    f"{type(self).__name__} pruning policy: XNNPACK's sparse inference cannot run it between the "
                    "first 3x3 convolution and the global average pooling."
                )
            return False

        self._search(graph, [c for s in starts for c in graph.consumers(s)], inside, graph.consumers)

    @staticmethod
    def _search(graph: ModelGraph, sources: list[str], stop: Callable[[str], bool], step: Callable) -> set[str]:
        """Nodes where ``stop`` holds, reached from ``sources`` along ``step``; empty when a branch ends first."""
        todo, seen, found = list(sources), set(sources), set()
        while todo:
            node = todo.pop()
            if stop(node):
                found.add(node)
                continue
            following = step(node)
            if not following:
                return set()
            for nxt in following:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return found

    @staticmethod
    def _producer_layers(graph: ModelGraph, node: str) -> list:
        return [graph.layer(p) for p in graph.producers(node)]

    def _is_start(self, graph: ModelGraph, node: str) -> bool:
        layer = graph.layer(node)
        if type(layer) is not keras.layers.Conv2D:
            return False
        producers = self._producer_layers(graph, node)
        kernel = tuple(layer.kernel.shape[:3]) if layer.built else None
        return (
            kernel == (3, 3, 3)
            and _pair(layer.strides) == (2, 2)
            and layer.padding == "valid"
            and len(producers) == 1
            and isinstance(producers[0], keras.layers.ZeroPadding2D)
            and tuple(map(tuple, producers[0].padding)) == ((1, 1), (1, 1))
        )

    def _is_end(self, graph: ModelGraph, node: str) -> bool:
        layer = graph.layer(node)
        return isinstance(layer, keras.layers.GlobalAveragePooling2D) and bool(layer.keepdims)

    def _supported(self, graph: ModelGraph, node: str) -> bool:
        """The layers XNNPACK's sparse subgraph accepts (its compatibility rules)."""
        layer = graph.layer(node)
        if isinstance(layer, (keras.layers.Add, keras.layers.Multiply, keras.layers.ZeroPadding2D,
                              keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU)):
            return True
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            producers = self._producer_layers(graph, node)
            pad = producers[0] if len(producers) == 1 and isinstance(producers[0], keras.layers.ZeroPadding2D) else None
            pad = tuple(map(tuple, pad.padding)) if pad is not None else None
            k, s = _pair(layer.kernel_size), _pair(layer.strides)
            same = layer.padding == "same" and s == (1, 1) and k in ((3, 3), (5, 5))
            strided = layer.padding == "valid" and s == (2, 2) and (
                (k == (3, 3) and pad == ((1, 1), (1, 1))) or (k == (5, 5) and pad == ((2, 2), (2, 2)))
            )
            return layer.depth_multiplier == 1 and _pair(layer.dilation_rate) == (1, 1) and (same or strided)
        if type(layer) is keras.layers.Conv2D:
            return (layer.groups == 1 and _pair(layer.dilation_rate) == (1, 1) and _pair(layer.kernel_size) == (1, 1)
                    and _pair(layer.strides) == (1, 1))
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            return bool(layer.keepdims)
        if isinstance(layer, keras.layers.BatchNormalization):
            return layer.axis in (3, -1, [3], [-1])
        if isinstance(layer, keras.layers.UpSampling2D):
            return layer.interpolation == "bilinear"
        if isinstance(layer, keras.layers.Activation):
            name = keras.activations.serialize(layer.activation)
            name = name if isinstance(name, str) else getattr(layer.activation, "__name__", "")
            return name in ("relu", "relu6", "leaky_relu", "elu", "sigmoid")
        return False
