"""Open composite layers: replace a custom layer's call by the sublayer and ``keras.ops`` calls inside it.

keras-hub backbones (and many user models) are Functional models whose blocks are custom
layers owning sublayers (``InvertedResidualBlock`` owns Conv2D / BatchNormalization...,
``ViTEncoderBlock`` owns LayerNormalization / MultiHeadAttention / Dense). A technique that
only sees the block cannot reach the kernels inside. Calling the block's ``call`` on
symbolic inputs records each sublayer call and each ``keras.ops`` operation as a node, so the
block becomes a Functional sub-graph that :meth:`ModelGraph.inline` splices in its place.

The block's own weights (``self.class_token``) and constant tensors (``self.position_ids``)
are read as attributes inside ``call``; while tracing they are swapped for the outputs of a
:class:`~kopt.graph.parameter.Parameter` (a copy of the weight) or a
:class:`~kopt.graph.parameter.Constant`, so they stay trainable and saved. An ``Embedding``
looked up with constant ids (position embeddings) becomes a Parameter holding the rows it
reads. A block whose call cannot be traced (Python control flow on tensor values, state it
updates itself, weights it reads without an attribute) is left whole; :func:`open_composites`
returns it with the reason.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Any, Callable, Iterator

import keras
from keras import tree

from kopt.core.keras_compat import APPLICATION_OPS_LAYERS
from kopt.core.layers import layout_of
from kopt.graph.parameter import Constant, Parameter

#: Keras' own layers built from sublayers that are opened too (their call is sublayers + ops).
OPENED_KERAS_LAYERS: tuple[type, ...] = (keras.layers.MultiHeadAttention,)


class CannotOpen(Exception):
    """Internal: why a composite layer stays whole."""


#: ``"module.Class"`` -> ``opener(layer, name, *args, **kwargs)`` giving the layer's outputs from
#: symbolic inputs, for layers whose own ``call`` cannot be traced (it reads the batch size).
OPENERS: dict[str, Callable[..., Any]] = {}


def register_opener(layer_class: str | type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``opener`` builds the layer's call from sublayers, keras.ops and Parameters.

    ``layer_class`` is the class, or its dotted ``module.QualName`` (a keras-hub class kopt does not import).
    """
    class_key = layer_class if isinstance(layer_class, str) else _class_key(layer_class)

    def decorator(opener: Callable[..., Any]) -> Callable[..., Any]:
        OPENERS[class_key] = opener
        return opener

    return decorator


def _class_key(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def is_composite(layer: Any) -> bool:
    """A layer kopt opens: a custom (or listed Keras) layer whose weights all live in sublayers
    or in attributes its ``call`` reads; never a kopt layer, a wrapper, a model, an RNN, or a
    layer with its own row in the layer table or a registered quantize config."""
    if not isinstance(layer, keras.layers.Layer):
        return False
    if isinstance(layer, (keras.Model, keras.layers.Wrapper, keras.layers.RNN, Parameter, Constant)):
        return False
    if type(layer) in OPENED_KERAS_LAYERS or _class_key(type(layer)) in APPLICATION_OPS_LAYERS:
        return True
    module = type(layer).__module__
    if module.startswith(("keras.", "kopt.")) or module == "keras":
        return False
    if layout_of(layer) is not None or _has_quantize_config(layer):
        return False
    sublayers = [s for s in layer._layers if isinstance(s, keras.layers.Layer)]
    return bool(sublayers) or not _own_variables(layer)


#: Classes that must stay whole though they own sublayers: a quantize config was registered for them
#: (``kopt.quantization.register`` adds them), so quantization handles the layer as one.
_KEPT_CLOSED: set[type] = set()


def keep_closed(cls: type) -> None:
    """Never open layers of class ``cls`` (it is handled as one layer: its quantize config says how)."""
    _KEPT_CLOSED.add(cls)


def _has_quantize_config(layer: keras.layers.Layer) -> bool:
    return type(layer) in _KEPT_CLOSED


def _own_variables(layer: keras.layers.Layer) -> list[keras.Variable]:
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def trace(layer: keras.layers.Layer, data: dict, name: str) -> keras.Model:
    """The Functional model computing the call recorded in node ``data`` from ``layer``'s sublayers."""
    tensors = data["tensors"]
    if data.get("arguments") is None or not tensors:
        raise CannotOpen("its call was not recorded with symbolic arguments")
    inputs = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype) for t in tensors]
    args, kwargs = data["arguments"].fill_in({id(t): new for t, new in zip(tensors, inputs)})
    kwargs = _accepted(layer, kwargs)
    opener = OPENERS.get(_class_key(type(layer)))
    swapped = {} if opener is not None else _swap_attributes(layer, inputs[0], name)
    try:
        with _batch_free_tracing():
            outputs = opener(layer, name, *args, **kwargs) if opener is not None else layer.call(*args, **kwargs)
    except CannotOpen:
        raise
    except Exception as error:  # noqa: BLE001 - any failure means "keep the block whole"
        raise CannotOpen(f"its call cannot be traced symbolically ({type(error).__name__}: {error})") from error
    finally:
        for attribute, (original, _) in swapped.items():
            object.__setattr__(layer, attribute, original)
    flat = tree.flatten(outputs)
    if not flat or not all(isinstance(t, keras.KerasTensor) for t in flat):
        raise CannotOpen("its call returns values that are not computed from its inputs")
    if len(flat) != len(data["outputs"]):
        raise CannotOpen(f"its traced call gives {len(flat)} outputs, the recorded call {len(data['outputs'])}")
    try:
        model = keras.Model(inputs, flat, name=f"{name}_opened")
    except Exception as error:  # noqa: BLE001
        raise CannotOpen(f"its traced call is not a graph of its inputs ({type(error).__name__}: {error})") from error
    held = {id(v) for v in model.weights}
    replaced = {id(original) for original, _ in swapped.values()}
    if opener is not None:  # an opener copies the weights it does not call through sublayers
        replaced |= {id(v) for v in layer.weights}
    lost = [v.path for v in layer.weights if id(v) not in held and id(v) not in replaced]
    if lost:
        raise CannotOpen(f"its call uses weights {lost} outside the traced graph")
    return model


def _accepted(layer: keras.layers.Layer, kwargs: dict) -> dict:
    parameters = inspect.signature(layer.call).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in parameters}


def _swap_attributes(layer: keras.layers.Layer, anchor: keras.KerasTensor, name: str) -> dict[str, tuple[Any, Any]]:
    """Point the layer's own weights and constant tensors at symbolic stand-ins; returns what to restore."""
    own = {id(v) for v in _own_variables(layer)}
    swapped: dict[str, tuple[Any, Any]] = {}
    for attribute, value in list(vars(layer).items()):
        if attribute.startswith("__"):
            continue
        if isinstance(value, keras.Variable) and id(value) in own:
            stand_in = Parameter.holding(value, name=f"{name}_{attribute.lstrip('_')}", trainable=value.trainable)
        elif keras.ops.is_tensor(value) and not isinstance(value, (keras.Variable, keras.KerasTensor)):
            stand_in = Constant(value, name=f"{name}_{attribute.lstrip('_')}")
        else:
            continue
        swapped[attribute] = (value, stand_in)
        object.__setattr__(layer, attribute, stand_in(anchor))
    return swapped


def open_composites(graph: Any, max_rounds: int = 16) -> dict[str, str]:
    """Inline every composite layer node of ``graph`` (recursively), in place.

    Returns ``{node: reason}`` for the composite layers left whole.
    """
    from kopt.graph import openers  # noqa: F401 - registers the built-in openers

    closed: dict[str, str] = {}
    for _ in range(max_rounds):
        targets = [n for n in graph.layer_nodes() if n not in closed and is_composite(graph.layer(n))]
        if not targets:
            break
        for node in targets:
            layer = graph.layer(node)
            try:
                functional = trace(layer, graph.dag.nodes[node], node.replace("/", "_").replace(":", "_"))
            except CannotOpen as reason:
                closed[node] = str(reason)
                continue
            new_nodes = graph.inline(node, functional)
            _fold_constant_lookups(graph, new_nodes)
            _drop_identities(graph, new_nodes)
    return closed


def _drop_identities(graph: Any, nodes: list[str]) -> None:
    """``Identity`` sublayers (keras-hub's Swin blocks use one for a zero drop-path rate) compute nothing;
    some cannot be copied from their config (a dtype policy object), so they are wired through."""
    for node in nodes:
        if node in graph.dag and type(graph.layer(node)) is keras.layers.Identity:
            graph.bypass(node)


def _fold_constant_lookups(graph: Any, nodes: list[str]) -> None:
    """``Embedding(Constant ids)`` (position embeddings) -> one Parameter holding the rows looked up."""
    for node in nodes:
        if node not in graph.dag or not isinstance(graph.layer(node), keras.layers.Embedding):
            continue
        producers = graph.producers(node)
        if len(producers) != 1 or not isinstance(graph.layer(producers[0]), Constant):
            continue
        (constant_node,) = producers
        if graph.consumers(constant_node) != [node]:
            continue
        embedding, constant = graph.layer(node), graph.layer(constant_node)
        rows = embedding(keras.ops.convert_to_tensor(constant.constant))
        parameter = Parameter.holding(rows, name=node.replace("/", "_").replace(":", "_") + "_rows")
        graph.fuse([constant_node, node], parameter, name=node)


class BatchSize:
    """Stands for the unknown batch size while a call is traced.

    ``ops.shape(x)[0]`` of a symbolic tensor is ``None``, so ``batch // windows`` or
    ``batch * heads`` (keras-hub's Swin blocks) fail. Traced calls get this instead: products and
    floor divisions by known integers stay a ``BatchSize``, and a reshape reads it as ``-1``
    (the only unknown size). Any other use (comparisons, ``int()``, shapes of new tensors) raises,
    which keeps the block whole.
    """

    def __mul__(self, other: Any) -> "BatchSize":
        if isinstance(other, int):
            return self
        return NotImplemented

    __rmul__ = __mul__

    def __floordiv__(self, other: Any) -> "BatchSize":
        if isinstance(other, int) and other > 0:
            return self
        return NotImplemented

    def __repr__(self) -> str:
        return "<batch size>"


def _unknown(size: Any) -> bool:
    return size is None or isinstance(size, BatchSize)


@contextlib.contextmanager
def _batch_free_tracing() -> Iterator[None]:
    """While tracing, ``ops.shape(x)[0]`` is a :class:`BatchSize` and ``ops.reshape`` reads it
    (or ``None``) as ``-1``, and any other ``-1`` as its size (from ``x``'s known sizes).

    Only the public ``keras.ops`` functions (what the traced call itself uses) are replaced; Keras'
    own layers call Keras' private ops module and are unaffected.
    """
    original_reshape, original_shape = keras.ops.reshape, keras.ops.shape

    def reshape(x: Any, newshape: Any) -> Any:
        if isinstance(x, keras.KerasTensor) and isinstance(newshape, (list, tuple)):
            if any(_unknown(d) for d in newshape):
                newshape = _batch_free_shape(tuple(x.shape), list(newshape))
        return original_reshape(x, newshape)

    def shape(x: Any) -> Any:
        sizes = original_shape(x)
        if isinstance(x, keras.KerasTensor) and sizes and sizes[0] is None:
            return (BatchSize(), *sizes[1:])
        return sizes

    replaced = {"reshape": reshape, "shape": shape}
    saved = [(m, f, getattr(m, f)) for m in (keras.ops, keras.ops.numpy) for f in replaced if hasattr(m, f)]
    for module, function, _ in saved:
        setattr(module, function, replaced[function])
    try:
        yield
    finally:
        for module, function, original in saved:
            setattr(module, function, original)


def _batch_free_shape(sizes: tuple, shape: list) -> tuple:
    unknown = [_unknown(d) for d in shape]
    if unknown.count(True) != 1 or not unknown[0]:
        raise CannotOpen(f"it reshapes to {tuple(shape)} (unknown sizes besides the batch)")
    if -1 in shape:
        if shape.count(-1) != 1 or any(d is None for d in sizes[1:]):
            raise CannotOpen(f"it reshapes a tensor of sizes {sizes} to {tuple(shape)}")
        total = math.prod(sizes[1:]) // math.prod(d for d in shape[1:] if d != -1)
        shape = [total if d == -1 else d for d in shape]
    return tuple(-1 if _unknown(d) else d for d in shape)
