"""Short, Keras-layer tensor names for a converted ``.tflite``.

The TF converter names each tensor after the TensorFlow ops fused into it, ';'-joined with
their full scopes. For a quantization-aware model that drags every fake-quant and wrapper op
along (``model_1/re_lu_1/Relu;model_1/conv2d_folded_1/add_3;model_1/conv2d_folded_1/conv2d_1/
convolution;...FakeQuantWithMinMaxVarsPerChannel``): the names grow the flatbuffer by kilobytes
and its zipped size by about half a percent on MobileNetV2. :func:`rename_tensors` rewrites
every tensor name to the Keras layer it belongs to, resolved against the model's layer names:

- model inputs and outputs: their signature names (``keras_tensor``, ``output_0``), the names
  the interpreter's signature runner uses anyway;
- weights and other constants: ``<layer>/<role>`` where ``<layer>`` is the layer that owns the
  consuming op's kernel and ``<role>`` is ``kernel`` / ``bias`` for convolutions and dense ops,
  else ``<op>_<input position>`` (``global_average_pooling2d/mean_1``);
- every other tensor: the layer of the op TF named it after (a fused Conv+BN+ReLU output is
  named after the ReLU, as TF's own first name part says).

A name taken twice gets ``/<n>`` appended; a ``_<n>`` suffix is avoided because it would read
as another layer (``conv2d_1``). Only strings change: operators, tensors, buffers and
signatures are untouched, so the interpreter's outputs are bitwise the same.

Why the scope suffixes need care: Keras enters each layer's TF name scope twice while
tracing, so in the exported graph every scope carries a uniquifying suffix (layer ``conv2d``
shows as ``conv2d_1``, layer ``conv2d_1`` as ``conv2d_1_2``). When the model's own scope is
suffixed that way, one ``_<n>`` is stripped from every scope component before the exact name
is tried; otherwise an exact layer name wins, as in :func:`kopt.export.diagnostics.layer_for`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

from kopt.export.flatbuffer import TFLiteSource, _ints, _text, read_object, to_bytes

_SUFFIX = re.compile(r"_\d+$")
# Constant inputs that are a layer's weights, by op and input position.
_WEIGHT_ROLES: dict[str, dict[int, str]] = {
    "CONV_2D": {1: "kernel", 2: "bias"},
    "CONV_3D": {1: "kernel", 2: "bias"},
    "DEPTHWISE_CONV_2D": {1: "kernel", 2: "bias"},
    "FULLY_CONNECTED": {1: "kernel", 2: "bias"},
    "TRANSPOSE_CONV": {0: "output_shape", 1: "kernel", 3: "bias"},
    "CONV_3D_TRANSPOSE": {0: "output_shape", 1: "kernel", 3: "bias"},
    "BATCH_MATMUL": {1: "kernel"},
}


@dataclass(frozen=True)
class LayerCatalog:
    """What the renamer knows of the Keras model: every layer name (nested ones included), the
    leaf layers that own a kernel (a weight of rank >= 2), and the model's own name."""

    names: frozenset[str]
    kernel_layers: frozenset[str]
    model_name: str | None = None


def catalog(model: Any) -> LayerCatalog:
    """The :class:`LayerCatalog` of a Keras model."""
    names, kernels = set(), set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        names.add(layer.name)
        leaf = not any(True for _ in layer._flatten_layers(include_self=False, recursive=False))
        if leaf and any(len(weight.shape) >= 2 for weight in layer.weights):
            kernels.add(layer.name)
    return LayerCatalog(frozenset(names), frozenset(kernels), getattr(model, "name", None))


def rename_tensors(tflite: TFLiteSource, layers: LayerCatalog | Iterable[str]) -> bytes:
    """``tflite`` with every tensor renamed after its Keras layer (see the module docstring)."""
    if not isinstance(layers, LayerCatalog):
        layers = LayerCatalog(frozenset(layers), frozenset())
    model = read_object(tflite)
    signature_names = _signature_names(model)
    for index, subgraph in enumerate(model.subgraphs or []):
        tensors = subgraph.tensors or []
        old = [_text(t.name) for t in tensors]
        resolver = _Resolver(layers, old)
        new = _new_names(model, subgraph, old, resolver, signature_names.get(index, {}))
        for tensor, name in zip(tensors, _unique(new)):
            tensor.name = name
    return to_bytes(model)


class _Resolver:
    """Scope component -> Keras layer name, with the file's suffix convention."""

    def __init__(self, layers: LayerCatalog, names: list[str]):
        self.layers = layers
        self.strip_first = _suffixed(layers.model_name, names)
        self._cache: dict[str, str | None] = {}

    def component(self, component: str) -> str | None:
        if component not in self._cache:
            stripped = _SUFFIX.sub("", component)
            order = (stripped, component) if self.strip_first else (component, stripped)
            self._cache[component] = next((c for c in order if c in self.layers.names), None)
        return self._cache[component]

    def part(self, part: str) -> str | None:
        """The deepest layer named in one ';'-part of a tensor name (a wrapper's inner layer)."""
        found = None
        for component in part.split("@")[0].split("/")[:-1] or [part]:
            found = self.component(component) or found
        return found

    def layers_in(self, name: str) -> list[str]:
        return [layer for layer in (self.part(p) for p in name.split(";") if p) if layer is not None]


def _new_names(model: Any, subgraph: Any, old: list[str], resolver: _Resolver, io: dict[int, str]) -> list[str]:
    buffers = model.buffers or []
    producers: dict[int, Any] = {}
    consumers: dict[int, list[tuple[Any, int]]] = {}
    for op in subgraph.operators or []:
        for i in _ints(op.outputs):
            producers.setdefault(i, op)
        for position, i in enumerate(_ints(op.inputs)):
            if i >= 0:
                consumers.setdefault(i, []).append((op, position))
    names = []
    for index, tensor in enumerate(subgraph.tensors or []):
        if index in io:
            names.append(io[index])
            continue
        constant = 0 < tensor.buffer < len(buffers) and buffers[tensor.buffer].data is not None
        if constant and index in consumers:
            names.append(_constant_name(model, subgraph, old, index, consumers[index][0], resolver))
        else:
            names.append(_activation_name(model, old, index, producers.get(index), resolver))
    return names


def _constant_name(model: Any, subgraph: Any, old: list[str], index: int, use: tuple[Any, int], resolver) -> str:
    op, position = use
    op_name = _op_name(model, op)
    role = _WEIGHT_ROLES.get(op_name, {}).get(position) or f"{op_name.lower()}_{position}"
    own = resolver.layers_in(old[index])
    outputs = [layer for out in _ints(op.outputs) for layer in resolver.layers_in(old[out])]
    owner = next((c for c in own + outputs if c in resolver.layers.kernel_layers), None)
    if owner is None and own:
        owner = own[0]
    elif owner is None and outputs:  # a fused Conv+BN+ReLU output names the ReLU first, the conv last
        owner = outputs[-1] if op_name in _WEIGHT_ROLES else outputs[0]
    return f"{owner}/{role}" if owner else f"{op_name.lower()}/{role}"


def _activation_name(model: Any, old: list[str], index: int, producer: Any, resolver: _Resolver) -> str:
    found = resolver.layers_in(old[index])
    if found:
        return found[0]
    if producer is not None:
        for out in _ints(producer.outputs):
            found = resolver.layers_in(old[out])
            if found:
                return found[0]
        return _op_name(model, producer).lower()
    return "tensor"


def _signature_names(model: Any) -> dict[int, dict[int, str]]:
    """Subgraph index -> {tensor index: signature input/output name}."""
    found: dict[int, dict[int, str]] = {}
    for signature in model.signatureDefs or []:
        names = found.setdefault(int(signature.subgraphIndex), {})
        for item in list(signature.inputs or []) + list(signature.outputs or []):
            names.setdefault(int(item.tensorIndex), _text(item.name))
    return found


def _suffixed(model_name: str | None, names: list[str]) -> bool:
    """Whether the graph's scopes carry Keras's trace suffix: the model's own scope does."""
    if not model_name:
        return False
    tops = Counter(part.split("/")[0] for name in names for part in name.split(";") if "/" in part)
    if not tops:
        return False
    top = tops.most_common(1)[0][0]
    return top != model_name and re.fullmatch(re.escape(model_name) + r"_\d+", top) is not None


def _unique(names: list[str]) -> list[str]:
    """The first tensor keeps a name; later ones get ``<name>/1``, ``<name>/2``... (never a name
    another tensor has)."""
    names = [n.replace(";", "_") or "tensor" for n in names]
    taken = set(names)
    used: set[str] = set()
    next_k: Counter = Counter()
    out = []
    for name in names:
        if name not in used:
            used.add(name)
            out.append(name)
            continue
        k = next_k[name] or 1
        while f"{name}/{k}" in used or f"{name}/{k}" in taken:
            k += 1
        next_k[name] = k + 1
        used.add(f"{name}/{k}")
        out.append(f"{name}/{k}")
    return out


def _op_name(model: Any, op: Any) -> str:
    from kopt.export.flatbuffer import _OP_NAMES, flatbuffer_utils

    code = model.operatorCodes[op.opcodeIndex]
    builtin = flatbuffer_utils.get_builtin_code_from_operator_code(code)
    return _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


__all__ = ["LayerCatalog", "catalog", "rename_tensors"]
