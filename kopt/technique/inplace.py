"""Techniques inside blocks kopt cannot open: sublayers wrapped in place.

:func:`kopt.graph.analyze` inlines a composite layer by tracing its ``call``; a block whose call
cannot be traced (Python ints read from tensor shapes, control flow on tensor values) stays whole
(``ModelGraph.closed_composites``). Its sublayers are still called through its attributes, so a
technique reaches their weights by putting its wrapper there: :func:`wrap_sublayers` copies the
block (the user's object is never changed; a block that cannot be copied from its config stays
closed) and replaces each sublayer the technique chooses by its wrapper. The copy is held by an
:class:`InPlaceWrapped` layer, which

* calls the block as it is (its call now calls the wrappers; ``training`` reaches them, so pruning
  steps advance and clusters move like anywhere else),
* records where the wrappers sit, so the ``.keras`` round trip puts them back (with their masks /
  centroids) into the block rebuilt from its config,
* strips to the plain block holding the weights the wrappers deploy (:meth:`InPlaceWrapped.strip`), or,
  holding quantization wrappers (whose fake-quant ops the int8 converter reads), to a copy of itself.

Coverage counts the nested wrappers' weights as reached: they are sublayers like any other.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import keras
import numpy as np
from keras import tree

from kopt.core.errors import GraphRewriteError, KoptRuntimeWarning, preview
from kopt.graph.rebuild import clone_layer, fresh_copy
from kopt.graph.sublayers import (
    Path,
    direct_sublayers,
    forget_torch_parameters,
    get_at,
    nested_sublayers,
    path_text,
    replace_at,
    sublayer_key,
)
from kopt.technique.wrapper import KoptWrapper

#: ``choose(path, sublayer)`` -> the sublayer's wrapper, or None to leave it (and look inside it).
Chooser = Callable[[str, keras.layers.Layer], "KoptWrapper | None"]


def wrapper_places(block: keras.layers.Layer) -> list[tuple[Path, KoptWrapper]]:
    """Every kopt wrapper held inside ``block`` with its path (the first one, for a wrapper held twice)."""
    found: list[tuple[Path, KoptWrapper]] = []

    def walk(parent: keras.layers.Layer, prefix: Path) -> None:
        for paths, sub in direct_sublayers(parent):
            if isinstance(sub, KoptWrapper):
                found.extend(((*prefix, *path), sub) for path in paths)
            elif not isinstance(sub, keras.Model):
                walk(sub, (*prefix, *paths[0]))

    walk(block, ())
    return found


def _build_shape(layer: keras.layers.Layer) -> Any:
    return (layer.get_build_config() or {}).get("input_shape")


def _zeros(input_shape: Any) -> Any:
    """Zeros (batch 1) of a recorded input shape: enough to run a block once."""
    return tree.map_shape_structure(lambda s: np.zeros([1 if d is None else d for d in s], "float32"), input_shape)


def calls_per_block_call(block: keras.layers.Layer) -> dict[int, int]:
    """How many times one call of ``block`` calls each kopt wrapper inside it (by ``id``).

    kopt cannot trace a closed block, so it runs it once (on zeros of its recorded input shape, not
    training: no state moves) and counts: a block that applies one Dense to two inputs calls it twice.
    Empty when the block recorded no input shape or does not run on zeros (each wrapper then counts as
    called once; the latter with a :class:`~kopt.core.errors.KoptRuntimeWarning` naming the block).
    """
    input_shape = _build_shape(block)
    if input_shape is None:
        return {}
    counts: dict[int, int] = {}
    wrappers = {id(wrapper): wrapper for _, wrapper in wrapper_places(block)}

    def counting(wrapper: KoptWrapper) -> Callable[..., Any]:
        call = wrapper.call

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[id(wrapper)] = counts.get(id(wrapper), 0) + 1
            return call(*args, **kwargs)

        return counted

    for wrapper in wrappers.values():  # on the instance, past Keras' attribute tracking; removed below
        object.__setattr__(wrapper, "call", counting(wrapper))
    try:
        block(_zeros(input_shape))
    except Exception as error:  # noqa: BLE001 - a block that cannot run on zeros: its calls stay uncounted
        warnings.warn(
            f"kopt could not run the block {block.name!r} once on a batch of zeros to count how often it calls "
            f"each wrapped sublayer ({type(error).__name__}: {preview(str(error), 160)}); each is taken as called "
            "once per call of the block. A sublayer it calls more often advances its pruning schedule that many "
            "times per training step (its wrapper's `step` shows it): then scale the schedule's steps by that count.",
            KoptRuntimeWarning,
            stacklevel=2,
        )
        return {}
    finally:
        for wrapper in wrappers.values():
            object.__delattr__(wrapper, "call")
    return counts


def _walk(block: keras.layers.Layer, visit: Callable[[Path, list[Path], keras.layers.Layer], bool]) -> None:
    """Call ``visit(prefix, paths, sublayer)`` on each sublayer, parents first; look inside it when it returns False."""

    def walk(parent: keras.layers.Layer, prefix: Path) -> None:
        for paths, sub in direct_sublayers(parent):
            if getattr(sub, "kopt_internal", False):
                continue
            if not visit(prefix, paths, sub) and not isinstance(sub, keras.Model):
                walk(sub, (*prefix, *paths[0]))

    walk(block, ())


def choose_sublayers(block: keras.layers.Layer, choose: Callable[[str, keras.layers.Layer], Any]) -> dict[str, Any]:
    """``path -> choose(path, sublayer)`` for the sublayers of ``block`` a technique would wrap (a non-None
    answer); the block is only read. :func:`wrap_sublayers` walks the same way, so plans made here apply there."""
    chosen: dict[str, Any] = {}

    def visit(prefix: Path, paths: list[Path], sub: keras.layers.Layer) -> bool:
        key = path_text((*prefix, *paths[0]))
        answer = choose(key, sub)
        if answer is not None:
            chosen[key] = answer
        return answer is not None

    _walk(block, visit)
    return chosen


def wrap_sublayers(block: keras.layers.Layer, choose: Chooser, *, name: str) -> "InPlaceWrapped":
    """A copy of ``block`` whose sublayers ``choose`` picks are replaced by their wrappers, in an :class:`InPlaceWrapped`.

    ``choose`` sees the copy's sublayers (built, holding the block's weights) with their path
    (``"attn/qkv"``) and wraps the object it is given. Sublayers it leaves are searched in turn.
    Raises :class:`GraphRewriteError` when the block cannot be copied from its config or nothing is chosen.
    """
    copy = clone_layer(block)
    chosen = 0

    def visit(prefix: Path, paths: list[Path], sub: keras.layers.Layer) -> bool:
        nonlocal chosen
        wrapper = choose(path_text((*prefix, *paths[0])), sub)
        if wrapper is None:
            return False
        if not wrapper.built:
            wrapper.build(_build_shape(sub))
        for path in paths:
            replace_at(copy, (*prefix, *path), wrapper)
        chosen += 1
        return True

    _walk(copy, visit)
    if not chosen:
        raise GraphRewriteError(f"No sublayer of block {block.name!r} ({type(block).__name__}) was chosen.")
    forget_torch_parameters(copy)
    return InPlaceWrapped(copy, name=name)


def nested_layers(block: keras.layers.Layer) -> list[tuple[str, keras.layers.Layer]]:
    """Every sublayer of ``block`` at any depth, by path (``"attn/qkv"``), parents first (kopt's own left out)."""
    return [(path_text(path), sub) for path, sub in nested_sublayers(block) if not getattr(sub, "kopt_internal", False)]


def freeze_nested(model: keras.Model, keys: Any) -> list[str]:
    """Make the sublayers named ``"block/path"`` in ``keys`` non-trainable in ``model`` (a stage's wrapped copy).

    A later stage that does not wrap a sublayer an earlier stage pruned or clustered would fine-tune it in
    float and regrow its zeros / spread its clusters; frozen, it keeps the weights it deploys. Returns the
    keys frozen (sublayers the model does not hold are skipped).
    """
    wanted: dict[str, set[str]] = {}
    for key in keys:
        block, _, path = str(key).partition("/")
        if path:
            wanted.setdefault(block, set()).add(path)
    frozen = []
    for layer in model._flatten_layers(include_self=False, recursive=False):
        block = layer.layer if isinstance(layer, InPlaceWrapped) else layer
        for path, sub in nested_layers(block) if block.name in wanted else []:
            if path in wanted[block.name]:
                sub.trainable = False
                frozen.append(sublayer_key(block.name, path))
    return frozen


def wrapped_keys(model: keras.Model) -> set[str]:
    """``"block/path"`` of every sublayer ``model`` holds wrapped in place (by any technique)."""
    return {
        sublayer_key(layer.layer.name, path)
        for layer in model._flatten_layers(include_self=False, recursive=False)
        if isinstance(layer, InPlaceWrapped)
        for path, _ in layer.wrappers()
    }


def closed_blocks(graph: Any) -> dict[str, keras.layers.Layer]:
    """The composite layers ``graph`` keeps whole, by flattened name (the plan's key)."""
    flat = graph.flat_names()
    return {flat[id(graph.layer(node))]: graph.layer(node) for node in graph.closed_composites if node in graph.dag}


@keras.saving.register_keras_serializable(package="kopt")
class InPlaceWrapped(KoptWrapper):
    """A block kept whole whose sublayers are (partly) replaced by kopt wrappers; see the module docstring.

    Args:
        layer: the block, its wrappers already in place (as :func:`wrap_sublayers` leaves it).
        placements: from a saved config only: ``[{"path": [...], "wrapper": serialized wrapper}]``
            to put back into the block rebuilt from its config.
    """

    technique = None  # the nested wrappers are the ones that act (and are counted)

    def __init__(self, layer: keras.layers.Layer, placements: list[dict] | None = None, **kwargs: Any):
        kwargs.setdefault("name", f"wrapped_{layer.name}")
        super().__init__(layer, **kwargs)
        self._pending = [(tuple(p["path"]), p["wrapper"]) for p in placements or []]
        if self._pending and layer.built:
            self._place_pending()

    # ------------------------------------------------------------- placing
    def _place_pending(self, input_shape: Any = None) -> None:
        """Put the saved wrappers back; a block that makes its sublayers on first call is run once first."""
        try:
            [get_at(self.layer, path) for path, _ in self._pending]
        except (AttributeError, IndexError, KeyError):
            input_shape = _build_shape(self.layer) if input_shape is None else input_shape
            if input_shape is None:
                return  # retried in build()
            self.layer(_zeros(input_shape))
        for path, config in self._pending:
            current = get_at(self.layer, path)
            if isinstance(current, KoptWrapper):
                continue  # the same wrapper held at two paths: placed with the first
            wrapper = keras.saving.deserialize_keras_object(config)
            if not wrapper.built:
                wrapper.build(_build_shape(current))
            for other, other_config in self._pending:  # every path that held the same sublayer
                if other_config == config and get_at(self.layer, other) is current:
                    replace_at(self.layer, other, wrapper)
        self._pending = []
        forget_torch_parameters(self.layer)

    def build(self, input_shape: Any = None) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        if self._pending:
            self._place_pending(input_shape)
        self.built = True

    # ------------------------------------------------------------- calling
    def call(self, inputs: Any, *args: Any, training: bool | None = None, **kwargs: Any) -> Any:
        # ``training`` also reaches the nested wrappers through Keras' call context.
        if training is not None and getattr(self.layer, "_call_has_training_arg", False):
            kwargs["training"] = training
        return self.layer(inputs, *args, **kwargs)

    def compute_output_spec(self, inputs: Any, *args: Any, training: bool | None = None, **kwargs: Any) -> Any:
        return self.layer.compute_output_spec(inputs, *args, **kwargs)

    # ------------------------------------------------------------- protocol
    def wrappers(self) -> list[tuple[str, KoptWrapper]]:
        """The wrappers inside the block, by path (``"attn/qkv"``)."""
        return [(path_text(path), wrapper) for path, wrapper in wrapper_places(self.layer)]

    def strip(self) -> keras.layers.Layer:
        """The plain block (from its config) holding the weights the wrappers deploy; a copy of this layer
        when a wrapper inside is one :meth:`KoptWrapper.strip` keeps (quantization's fake-quant ops)."""
        if any(wrapper.kept_by_strip for _, wrapper in self.wrappers()):
            return clone_layer(self)
        deployed: dict[int, Any] = {}
        internal: set[int] = set()
        for _, wrapper in self.wrappers():
            deployed.update({id(v): value for v, value in wrapper.transformed_weights(training=False)})
        for sub in self.layer._flatten_layers(include_self=False, recursive=True):
            if getattr(sub, "kopt_internal", False):
                internal.update(id(v) for v in list(sub._trainable_variables) + list(sub._non_trainable_variables))
        weights = [v for v in self.layer.weights if id(v) not in internal]
        plain = fresh_copy(self.layer, like=[tuple(v.shape) for v in weights])
        for target, source in zip(plain.weights, weights):
            target.assign(deployed.get(id(source), source))
        return plain

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        placements = [(path, config) for path, config in self._pending]
        placements += [(path, keras.saving.serialize_keras_object(w)) for path, w in wrapper_places(self.layer)]
        config["placements"] = [{"path": list(path), "wrapper": wrapper} for path, wrapper in placements]
        return config
