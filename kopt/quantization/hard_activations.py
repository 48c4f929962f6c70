"""Hard-swish and hard-sigmoid written as ADD, RELU6 and MUL: ops the Edge TPU runs.

TFLite has a HARD_SWISH op, but the Edge TPU compiler does not: one HARD_SWISH after the
first convolution of MobileNetV3 sends the rest of the model to the CPU (the compiler cuts the
graph once). MobileNetV3's own definitions use only ops the Edge TPU maps:

    hard_sigmoid(x) = relu6(x + 3) * (1/6)
    hard_swish(x)   = x * hard_sigmoid(x)

The rewrite inlines that form (an ``add`` op, a ``ReLU(6)`` layer, ``multiply`` ops) in place
of each hard activation, so that quantization gives every intermediate tensor its own range
and the converter emits ADD (with RELU6 fused) and MUL instead of HARD_SWISH. The float
function is unchanged up to float rounding (Keras computes the same expression).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

from kopt.core.errors import InvalidArgumentError
from kopt.core.keras_compat import ops_nn, ops_numpy
from kopt.graph import ModelGraph, analyze, find_nodes
from kopt.quantization.registry import activation_name

if TYPE_CHECKING:
    from kopt.quantization.transforms import TransformContext

#: Keras activation name -> the function it computes.
_ACTIVATIONS = {"hard_silu": "hard_swish", "hard_swish": "hard_swish", "hard_sigmoid": "hard_sigmoid"}


def hard_activation(layer: keras.Operation) -> str | None:
    """``"hard_swish"`` / ``"hard_sigmoid"`` when the layer (``Activation`` or raw op) computes one."""
    if type(layer) is keras.layers.Activation:
        return _ACTIVATIONS.get(activation_name(layer.activation) or "")
    if type(layer) is ops_nn.HardSilu:
        return "hard_swish"
    if type(layer) is ops_nn.HardSigmoid:
        return "hard_sigmoid"
    return None


def relu6_form(kind: str, input_spec: keras.KerasTensor, name: str) -> keras.Model:
    """A Functional model computing ``kind`` with add / ReLU(6) / multiply only."""
    if kind not in ("hard_swish", "hard_sigmoid"):
        raise InvalidArgumentError(f"kind must be 'hard_swish' or 'hard_sigmoid', got {kind!r}.")
    x = keras.Input(batch_shape=tuple(input_spec.shape), dtype=input_spec.dtype)
    gate = ops_numpy.Add(name=f"{name}_plus3")(x, 3.0)
    gate = keras.layers.ReLU(6.0, name=f"{name}_relu6")(gate)
    gate = ops_numpy.Multiply(name=f"{name}_div6")(gate, 1.0 / 6.0)
    y = ops_numpy.Multiply(name=f"{name}_mul")(x, gate) if kind == "hard_swish" else gate
    return keras.Model(x, y, name=f"{name}_relu6_form")


def inline_hard_activations(graph: ModelGraph, nodes: list[str] | None = None) -> dict[str, list[str]]:
    """Replace each hard-activation node (all, or those of ``nodes``) by its ReLU6 form, in place.

    Returns ``{replaced node: new nodes}``.
    """
    targets = find_nodes(graph, hard_activation) if nodes is None else nodes
    replaced = {}
    for node in targets:
        kind = hard_activation(graph.layer(node))
        (input_spec,) = graph.dag.nodes[node]["tensors"]
        name = node.replace("/", "_").replace(":", "_")
        replaced[node] = graph.inline(node, relu6_form(kind, input_spec, name), prefix=f"{node}/")
    return replaced


def decompose_hard_activations(ctx: TransformContext) -> None:
    """Quantization transform: every quantized hard activation becomes ADD(+RELU6) and MUL ops."""
    nodes = [n for n in find_nodes(ctx.graph, hard_activation) if ctx.quantized(n)]
    for node, new_nodes in inline_hard_activations(ctx.graph, nodes).items():
        ctx.configs.pop(node, None)
        for new in new_nodes:
            ctx.set_config(new, ctx.graph.layer(new))
    if nodes:
        ctx.notes.append(
            f"wrote {len(nodes)} hard-swish/hard-sigmoid activation(s) as ReLU6, ADD and MUL (Edge TPU ops)"
        )


def replace_hard_activations(model: keras.Model) -> keras.Model:
    """A copy of ``model`` (own weights) whose hard activations are written in their ReLU6 form.

    This is the float graph quantization trains when the scheme decomposes hard activations;
    it computes what ``model`` computes.
    """
    graph = analyze(model)
    inline_hard_activations(graph)
    return graph.rebuild(name=model.name, clone=True)
