"""Where a layer keeps its sublayers, and how to put another layer in one's place.

A composite block that cannot be opened (:mod:`kopt.graph.composite`) still calls its sublayers
through its own attributes (``self.conv``, ``self.blocks[0].dense``, ``self.heads["q"]``). A
technique reaches their weights by replacing each such sublayer *in place* with its wrapper:
the block's ``call`` then calls the wrapper. A :data:`Path` names one place: attribute names,
list indices and dict keys from the block down, e.g. ``("blocks", 0, "dense")``.

Keras tracks sublayers in ``layer._layers`` (weights, saving, ``_flatten_layers`` walk it) and
PyTorch in ``_modules``; :func:`replace_at` keeps both in step, at the old sublayer's position so
the order of ``layer.weights`` does not change.
"""

from __future__ import annotations

from typing import Any, Iterator

import keras

#: Attribute names, list indices and dict keys from a block down to one of its sublayers.
Path = tuple[Any, ...]

#: Keras / PyTorch bookkeeping attributes that hold sublayers but are not where a block calls them.
_BOOKKEEPING = frozenset({"_layers", "_modules", "_tracker", "_parameters", "_buffers", "_torch_params"})


def path_text(path: Path) -> str:
    """``("blocks", 0, "dense")`` -> ``"blocks/0/dense"`` (plan keys and messages)."""
    return "/".join(str(step) for step in path)


def sublayer_key(block: str, path: Path | str) -> str:
    """The plan / report key of the sublayer a block kept whole holds at ``path``: ``"blocks_1/attn/qkv"``.

    Layer names in a flattened graph never hold ``/`` (Keras refuses it), so the key cannot clash with one."""
    return f"{block}/{path if isinstance(path, str) else path_text(path)}"


def is_sublayer_key(key: str) -> bool:
    """Whether a plan key names a sublayer inside a block kept whole (see :func:`sublayer_key`)."""
    return "/" in key


def block_of(key: str) -> str:
    """The block of a :func:`sublayer_key`."""
    return key.split("/", 1)[0]


def _attributes(layer: keras.layers.Layer) -> Iterator[tuple[str, Any]]:
    names = list(vars(layer)) + list(getattr(layer, "_modules", None) or {})  # PyTorch keeps modules apart
    for name in dict.fromkeys(names):
        if name.startswith(("__", "_self_")) or name in _BOOKKEEPING:  # _self_*: TensorFlow's own tracking
            continue
        try:
            yield name, getattr(layer, name)
        except Exception:  # noqa: BLE001 - a property that fails is no sublayer
            continue


def _places(value: Any, path: Path, depth: int = 0) -> Iterator[tuple[Path, Any]]:
    """Every layer in ``value`` (a layer, or lists / tuples / dicts of them), with its path."""
    if isinstance(value, keras.layers.Layer):
        yield path, value
    elif depth < 4 and isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _places(item, (*path, index), depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for key, item in value.items():
            yield from _places(item, (*path, key), depth + 1)


def direct_sublayers(layer: keras.layers.Layer) -> list[tuple[list[Path], keras.layers.Layer]]:
    """Each sublayer ``layer`` tracks, with every path at which its attributes hold it (in tracking order)."""
    tracked = {id(sub): sub for sub in getattr(layer, "_layers", [])}
    paths: dict[int, list[Path]] = {}
    for name, value in _attributes(layer):
        for path, sub in _places(value, (name,)):
            if id(sub) in tracked:
                paths.setdefault(id(sub), []).append(path)
    return [(sorted(paths[key], key=lambda p: (len(p), path_text(p))), sub) for key, sub in tracked.items() if key in paths]


def nested_sublayers(layer: keras.layers.Layer) -> list[tuple[Path, keras.layers.Layer]]:
    """Every sublayer of ``layer`` at any depth with its first path, parents before children.

    Models nested in a block are not entered: their layers are not attributes that can be replaced.
    """
    found: list[tuple[Path, keras.layers.Layer]] = []
    seen: set[int] = {id(layer)}

    def walk(parent: keras.layers.Layer, prefix: Path) -> None:
        for paths, sub in direct_sublayers(parent):
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            found.append(((*prefix, *paths[0]), sub))
            if not isinstance(sub, keras.Model):
                walk(sub, (*prefix, *paths[0]))

    walk(layer, ())
    return found


def _step(value: Any, step: Any) -> Any:
    if isinstance(value, keras.layers.Layer):
        return getattr(value, step)
    return value[step]


def get_at(layer: keras.layers.Layer, path: Path) -> Any:
    """What ``layer`` holds at ``path``."""
    value: Any = layer
    for step in path:
        value = _step(value, step)
    return value


def replace_at(layer: keras.layers.Layer, path: Path, new: keras.layers.Layer) -> keras.layers.Layer:
    """Put ``new`` where ``layer`` holds a sublayer at ``path``; returns the sublayer it replaces.

    The owning layer tracks ``new`` at the old sublayer's position (same weight order); a tuple
    on the way is rebuilt with ``new`` in it.
    """
    owner, chain = layer, [layer]
    for step in path[:-1]:
        chain.append(_step(chain[-1], step))
        if isinstance(chain[-1], keras.layers.Layer):
            owner = chain[-1]
    old = _step(chain[-1], path[-1])
    if not isinstance(old, keras.layers.Layer):
        raise TypeError(f"{path_text(path)!r} holds a {type(old).__name__}, not a layer")
    _put(chain, list(path), new)
    _retrack(owner, old, new)
    return old


def _put(chain: list[Any], path: list[Any], new: Any) -> None:
    container, step = chain[-1], path[-1]
    if isinstance(container, keras.layers.Layer):
        tracker = getattr(container, "_tracker", None)
        locked = bool(getattr(tracker, "locked", False))
        if locked:
            tracker.unlock()  # a built layer refuses new state; this only swaps one sublayer for another
        try:
            setattr(container, step, new)
        finally:
            if locked:
                tracker.lock()
    elif isinstance(container, tuple):  # immutable: rebuild it and put the copy one level up
        items = list(container)
        items[step] = new
        _put(chain[:-1], path[:-1], tuple(items))
    else:
        container[step] = new


def _retrack(owner: keras.layers.Layer, old: keras.layers.Layer, new: keras.layers.Layer) -> None:
    kept = [sub for sub in owner._layers if sub is not new]
    position = next((i for i, sub in enumerate(kept) if sub is old), None)
    if position is None:
        kept.append(new)
    else:
        kept[position] = new
    owner._layers[:] = kept
    stored = getattr(getattr(owner, "_tracker", None), "stored_ids", {}).get("layers")
    if stored is not None:
        stored.discard(id(old))
        stored.add(id(new))


def forget_torch_parameters(layer: keras.layers.Layer) -> None:
    """PyTorch: drop the parameter lists ``layer`` and its sublayers cached at build; read again on next use."""
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        modules = getattr(sub, "_modules", None)
        if modules and "_torch_params" in modules:
            del modules["_torch_params"]
