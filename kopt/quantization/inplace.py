"""Quantization-aware training inside blocks kopt cannot open: their weights fake-quantized in place.

A block :func:`kopt.graph.analyze` keeps whole (``ModelGraph.closed_composites``) has no config of its
own, but its Dense / Conv / EinsumDense ... sublayers do. Each one the scheme gives weight quantizers
(the same quantizers, bits and per-channel rules as that layer type anywhere else) is put in a
:class:`SublayerQuantizeWrapper` where it sits in a copy of the block
(:func:`kopt.technique.inplace.wrap_sublayers`), so training sees the int8 weight grid, and the
sublayer's output (a tensor of its own in TFLite) gets a learnt range like any weighted layer's. The
rest of the block's inner tensors (what its ``call`` computes between sublayers with ``keras.ops``)
get no fake-quant, as kopt cannot see that dataflow: the int8 lowering calibrates them on
representative data. The block's output gets an activation fake-quant like any layer's.

Stripped, the block keeps its wrappers (as a QAT layer keeps its fake-quant ops: the converter reads
the int8 weights and output ranges from them); the weights it deploys sit on the symmetric grid the
converter stores (``max |w| / 127``, per channel for convolutions, per tensor for Dense).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Collection

import keras

from kopt.core.errors import GraphRewriteError
from kopt.graph import ModelGraph
from kopt.graph.sublayers import sublayer_key
from kopt.quantization.config import QuantizeConfig
from kopt.quantization.quantizers import ActivationQuantizer, deserialize, serialize
from kopt.quantization.registry import activation_name
from kopt.quantization.transforms import replace_calls
from kopt.quantization.wrapper import QuantizeWrapper
from kopt.technique.inplace import InPlaceWrapped, wrap_sublayers
from kopt.technique.registry import float_variable

#: ``(key "block/path", sublayer) -> config`` of a sublayer to fake-quantize in place, or None to leave it.
SublayerConfig = Callable[[str, keras.layers.Layer], "QuantizeConfig | None"]

#: Activations TFLite fuses into a weighted op, so that the sublayer's output is the op's output tensor.
FUSED_ACTIVATIONS = ("linear", "relu", "relu6")

#: A closed block's own output: a new activation with its own range (its inputs come quantized).
BLOCK_OUTPUT = QuantizeConfig(output="range")


def in_place_config(lookup: Callable[[keras.Operation], QuantizeConfig | None], layer: keras.layers.Layer) -> QuantizeConfig | None:
    """``lookup(layer)`` when a :class:`QuantizeWrapper` can fake-quantize its weights where it sits: the
    config lists weights and each is a float variable of the layer. Per-channel affine layers (their scale
    is computed, the converter folds it) and grouped convolutions (rewritten outside a block) are left to
    calibration."""
    if getattr(layer, "groups", 1) != 1:
        return None
    config = lookup(layer)
    if config is None or not config.weights:
        return None
    if not all(float_variable(getattr(layer, attr, None)) for attr in config.weights):
        return None
    return config


@keras.saving.register_keras_serializable(package="kopt")
class SublayerQuantizeWrapper(QuantizeWrapper):
    """A :class:`QuantizeWrapper` for a sublayer of a block kept whole: fake-quantized weights, and its output
    fake-quantized with a learnt range (``output_quantizer``; None: weights only), since no activation
    fake-quant can be placed after it in a graph kopt cannot see."""

    def __init__(
        self,
        layer: keras.layers.Layer,
        quantize_config: QuantizeConfig,
        output_quantizer: ActivationQuantizer | dict | None = None,
        **kwargs: Any,
    ):
        super().__init__(layer, quantize_config, **kwargs)
        self.output_quantizer = deserialize(output_quantizer)
        self._output_state: dict[str, keras.Variable] = {}

    def build(self, input_shape: Any = None) -> None:
        super().build(input_shape)
        if self.output_quantizer is not None:
            self._output_state = self.output_quantizer.build(self, "output", ())

    def call(self, inputs: Any, training: bool | None = None, **kwargs: Any) -> Any:
        outputs = super().call(inputs, training=training, **kwargs)
        if self.output_quantizer is None:
            return outputs
        return self.output_quantizer(outputs, self._output_state, bool(training))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "output_quantizer": serialize(self.output_quantizer)}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> "SublayerQuantizeWrapper":
        config = dict(config)
        output_quantizer = config.pop("output_quantizer", None)
        wrapper = super().from_config(config, custom_objects=custom_objects)
        wrapper.output_quantizer = deserialize(output_quantizer)
        return wrapper


@dataclass
class InPlaceResult:
    """What :func:`quantize_closed_blocks` did: blocks quantized in place, their sublayer keys, what it could not."""

    blocks: list[str] = field(default_factory=list)
    sublayers: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # block name -> why its sublayers are not reached


def quantize_closed_blocks(
    graph: ModelGraph,
    nodes: list[str],
    configs: dict[str, QuantizeConfig | None],
    choose: SublayerConfig,
    keep_float: Collection[str] = (),
    activation_quantizer: ActivationQuantizer | None = None,
) -> InPlaceResult:
    """Replace each closed block among ``nodes`` (nodes without a config) by a copy whose weight sublayers
    are fake-quantized in place; give its calls :data:`BLOCK_OUTPUT`. Sublayers keyed ``"block/path"`` in
    ``keep_float`` stay float. A block that cannot be copied or holds nothing to quantize is left as it was
    (``refused`` says why). ``activation_quantizer``: the scheme's template for the sublayers' outputs
    (a config whose output is not ``"range"`` gets none)."""
    result = InPlaceResult()
    flat = graph.flat_names()
    done: set[int] = set()
    for node in nodes:
        block = graph.layer(node)
        if node not in graph.closed_composites or id(block) in done or not isinstance(block, keras.layers.Layer):
            continue
        done.add(id(block))
        name = flat[id(block)]
        chosen: list[str] = []

        def wrapper(path: str, sub: keras.layers.Layer, name: str = name, chosen: list[str] = chosen) -> Any:
            key = sublayer_key(name, path)
            config = None if key in keep_float else choose(key, sub)
            if config is None:
                return None
            chosen.append(key)
            fused = activation_name(getattr(sub, "activation", None)) in FUSED_ACTIVATIONS
            output = activation_quantizer if config.output == "range" and fused else None
            return SublayerQuantizeWrapper(sub, config, output, name=f"quant_{sub.name}")

        try:
            wrapped = wrap_sublayers(block, wrapper, name=f"quant_{block.name}")
        except GraphRewriteError as error:
            result.refused[block.name] = str(error)
            continue
        calls = graph.nodes_of(block)
        replace_calls(graph, calls, wrapped)
        for call in calls:
            configs[call] = BLOCK_OUTPUT
        result.blocks.append(name)
        result.sublayers.extend(chosen)
    return result


def is_quantized_in_place(layer: keras.layers.Layer) -> bool:
    """A block whose sublayers QAT fake-quantizes in place."""
    return isinstance(layer, InPlaceWrapped) and any(w.technique == "quantize" for _, w in layer.wrappers())


__all__ = ["BLOCK_OUTPUT", "InPlaceResult", "SublayerQuantizeWrapper", "in_place_config", "is_quantized_in_place", "quantize_closed_blocks"]
