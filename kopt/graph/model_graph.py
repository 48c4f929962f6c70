"""Keras Functional / Sequential model -> networkx DAG, and back.

One DAG node per layer *call* (a layer called twice gives two nodes that share one layer
object) and per raw ``keras.ops`` operation; one edge per tensor, so ``Add()([x, x])`` is
two parallel edges (hence a ``MultiDiGraph``). Models used as layers are flattened:
their inner calls become nodes of the outer graph, named ``outer_call/inner_layer``.

Node attributes
    ``layer``      the ``keras.Operation`` called (an ``InputLayer`` for input nodes)
    ``kind``       ``"input"``, ``"layer"`` or ``"op"`` (a raw ``keras.ops`` operation)
    ``arguments``  Keras' ``SymbolicArguments`` of the original call (``None`` for input
                   nodes and for nodes created by :meth:`ModelGraph.fuse`)
    ``tensors``    the original call's input KerasTensors, in ``arguments`` flat order
    ``outputs``    the original call's output KerasTensors
    ``order``      integer giving a stable, deterministic topological tie-break
Edge attributes
    ``src_index``  which output of the producer
    ``dst_index``  which input slot of the consumer (index into ``tensors``)
    ``shape``, ``dtype``  of the tensor
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import keras
import networkx as nx

from kopt.core.errors import GraphRewriteError, UnsupportedModelError
from kopt.core.keras_compat import Functional


def _changes_graph(method: Callable) -> Callable:
    """Mark a rewrite: the graph's cached views are dropped once it returns (or fails half-way)."""

    @functools.wraps(method)
    def rewrite(self: "ModelGraph", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            self.changed()

    return rewrite


@dataclass
class ModelGraph:
    """A Keras model as a DAG of layer calls. Build it with :func:`analyze`."""

    dag: nx.MultiDiGraph
    inputs: list[str]
    outputs: list[tuple[str, int]]
    inputs_struct: Any
    outputs_struct: Any
    name: str
    #: Composite layers left whole by :func:`analyze` (node -> why it could not be opened).
    closed_composites: dict[str, str] = field(default_factory=dict)
    _order: Iterator[int] = field(default_factory=lambda: itertools.count(10**9), repr=False)
    #: Derived views (execution order, layer -> nodes), rebuilt after any change. Callers that edit
    #: ``dag`` themselves call :meth:`changed`; a change in node or edge count is caught regardless.
    _views: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ----------------------------------------------------------------- queries
    def layer(self, node: str) -> keras.Operation:
        return self.dag.nodes[node]["layer"]

    def changed(self) -> None:
        """Forget the cached views: call after editing ``dag`` (or a node's ``layer``) directly."""
        self._views.clear()

    def _view(self, name: str, compute: Any) -> Any:
        size = (self.dag.number_of_nodes(), self.dag.number_of_edges())
        if self._views.get("size") != size:
            self._views.clear()
            self._views["size"] = size
        if name not in self._views:
            self._views[name] = compute()
        return self._views[name]

    def topological_nodes(self) -> list[str]:
        """Node ids in execution order (deterministic)."""
        order = self.dag.nodes
        nodes = self._view(
            "topological", lambda: list(nx.lexicographical_topological_sort(self.dag, key=lambda n: order[n]["order"]))
        )
        return list(nodes)

    def layer_nodes(self) -> list[str]:
        """Nodes that call a ``keras.layers.Layer`` (not inputs, not raw ops), in order."""
        return [n for n in self.topological_nodes() if self.dag.nodes[n]["kind"] == "layer"]

    def layers(self) -> list[keras.layers.Layer]:
        """Distinct layer objects in execution order (a shared layer appears once)."""
        seen: dict[int, keras.layers.Layer] = {}
        for node in self.layer_nodes():
            layer = self.layer(node)
            seen.setdefault(id(layer), layer)
        return list(seen.values())

    def nodes_of(self, layer: keras.Operation) -> list[str]:
        """Every node that calls ``layer`` (more than one for a shared layer), in execution order."""

        def index() -> dict[int, list[str]]:
            by_layer: dict[int, list[str]] = {}
            for node in self.topological_nodes():
                by_layer.setdefault(id(self.dag.nodes[node]["layer"]), []).append(node)
            return by_layer

        return list(self._view("by_layer", index).get(id(layer), []))

    def flat_names(self) -> dict[int, str]:
        """``id(layer) -> name`` the layer has in the flattened model: unique across nested models.

        A layer keeps its own name unless another distinct layer of the graph has it too (two
        sub-models each holding a ``"dense"``); then it is named after its first node path,
        ``"a/dense"`` -> ``"a_dense"`` (Keras names cannot hold ``/``), with a suffix if taken.
        Policies key their plans by these names, and :func:`kopt.graph.map_layers` gives them to
        the layers it copies, so a plan made on a nested model still applies after flattening.
        """
        counts: dict[str, int] = {}
        layers = [self.layer(n) for n in self.inputs] + self.layers()
        for layer in layers:
            counts[layer.name] = counts.get(layer.name, 0) + 1
        taken = {name for name, count in counts.items() if count == 1}
        names: dict[int, str] = {}
        for layer in layers:
            if counts[layer.name] == 1:
                names[id(layer)] = layer.name
                continue
            base = self.nodes_of(layer)[0].replace("/", "_") if not isinstance(layer, keras.layers.InputLayer) else layer.name
            candidate, k = base, 1
            while candidate in taken:
                candidate, k = f"{base}_{k}", k + 1
            taken.add(candidate)
            names[id(layer)] = candidate
        return names

    def consumers(self, node: str) -> list[str]:
        return sorted(set(self.dag.successors(node)), key=lambda n: self.dag.nodes[n]["order"])

    def producers(self, node: str) -> list[str]:
        """Producers of ``node``'s inputs, in input-slot order (repeats kept)."""
        edges = sorted(self.dag.in_edges(node, data=True), key=lambda e: e[2]["dst_index"])
        return [u for u, _, _ in edges]

    def is_output(self, node: str) -> bool:
        return any(n == node for n, _ in self.outputs)

    def output_shapes(self, node: str) -> list[tuple]:
        return [tuple(t.shape) for t in self.dag.nodes[node]["outputs"]]

    def input_shapes(self, node: str) -> list[tuple]:
        return [tuple(t.shape) for t in self.dag.nodes[node]["tensors"]]

    # ---------------------------------------------------------------- rewrites
    @_changes_graph
    def replace_layer(self, old: keras.Operation, new: keras.Operation) -> None:
        """Call ``new`` wherever ``old`` was called (every call of a shared layer)."""
        nodes = self.nodes_of(old)
        if not nodes:
            raise GraphRewriteError(f"Layer {getattr(old, 'name', old)!r} is not in model graph {self.name!r}.")
        for node in nodes:
            self.dag.nodes[node]["layer"] = new
            if self.dag.nodes[node]["kind"] == "op" and isinstance(new, keras.layers.Layer):
                self.dag.nodes[node]["kind"] = "layer"

    @_changes_graph
    def fuse(self, nodes: Iterable[str], new_layer: keras.layers.Layer, name: str | None = None) -> str:
        """Replace the connected subgraph ``nodes`` by one call of ``new_layer``.

        The new layer receives the tensors that enter the subgraph (one tensor, or a list
        in slot order) and must produce the outputs of the subgraph's single exit node.
        Returns the new node's id.
        """
        nodes = list(dict.fromkeys(nodes))
        members = set(nodes)
        missing = [n for n in nodes if n not in self.dag]
        if missing:
            raise GraphRewriteError(f"Cannot fuse: nodes {missing} are not in the graph.")
        order = {n: self.dag.nodes[n]["order"] for n in nodes}
        exits = {u for u, v in self.dag.out_edges(nodes) if v not in members}
        exits |= {n for n in nodes if self.is_output(n)}
        if len(exits) != 1:
            raise GraphRewriteError(
                f"Cannot fuse {nodes}: the subgraph must have exactly one node whose outputs leave it, "
                f"found {sorted(exits) or 'none'}."
            )
        (exit_node,) = exits
        entering = sorted(
            (e for e in self.dag.in_edges(nodes, data=True, keys=True) if e[0] not in members),
            key=lambda e: (order[e[1]], e[3]["dst_index"]),
        )
        leaving = [e for e in self.dag.out_edges(nodes, data=True, keys=True) if e[1] not in members]
        new_id = _fresh_id(self.dag, name or new_layer.name)
        exit_data = self.dag.nodes[exit_node]
        self.dag.add_node(
            new_id,
            layer=new_layer,
            kind="layer",
            arguments=None,
            tensors=[self.dag.nodes[v]["tensors"][d["dst_index"]] for _, v, _, d in entering],
            outputs=exit_data["outputs"],
            order=min(order.values()),
        )
        for slot, (u, _, _, data) in enumerate(entering):
            self.dag.add_edge(u, new_id, **{**data, "dst_index": slot})
        for _, v, _, data in leaving:
            self.dag.add_edge(new_id, v, **data)
        self.outputs = [(new_id if n == exit_node else n, i) for n, i in self.outputs]
        self.dag.remove_nodes_from(nodes)
        return new_id

    @_changes_graph
    def bypass(self, node: str) -> None:
        """Remove a one-input, one-output node (e.g. ``Dropout``), wiring its input through."""
        in_edges = list(self.dag.in_edges(node, data=True))
        if len(in_edges) != 1 or len(self.dag.nodes[node]["outputs"]) != 1:
            raise GraphRewriteError(f"Cannot bypass {node!r}: it must have exactly one input and one output.")
        (producer, _, in_data) = in_edges[0]
        for _, consumer, data in list(self.dag.out_edges(node, data=True)):
            self.dag.add_edge(producer, consumer, **{**data, "src_index": in_data["src_index"]})
        self.outputs = [(producer, in_data["src_index"]) if n == node else (n, i) for n, i in self.outputs]
        self.dag.remove_node(node)

    @_changes_graph
    def insert_after(self, node: str, new_layer: keras.layers.Layer, output_index: int = 0, name: str | None = None) -> str:
        """Insert a one-input layer on output ``output_index`` of ``node``, before all its consumers."""
        tensor = self.dag.nodes[node]["outputs"][output_index]
        new_id = _fresh_id(self.dag, name or new_layer.name)
        self.dag.add_node(
            new_id,
            layer=new_layer,
            kind="layer",
            arguments=None,
            tensors=[tensor],
            outputs=[tensor],
            order=self.dag.nodes[node]["order"] + 0.5,
        )
        for u, v, key, data in list(self.dag.out_edges(node, keys=True, data=True)):
            if data["src_index"] == output_index:
                self.dag.remove_edge(u, v, key)
                self.dag.add_edge(new_id, v, **{**data, "src_index": 0})
        self.dag.add_edge(node, new_id, src_index=output_index, dst_index=0, shape=tuple(tensor.shape), dtype=tensor.dtype)
        self.outputs = [(new_id, 0) if (n, i) == (node, output_index) else (n, i) for n, i in self.outputs]
        return new_id

    @_changes_graph
    def inline(self, node: str, functional: keras.Model, prefix: str | None = None) -> list[str]:
        """Replace the call ``node`` by the calls inside ``functional`` (its inputs take the node's inputs).

        ``functional`` is a Functional model standing for what ``node`` computes: one input per
        tensor entering the node (in slot order) and one output per output of the node. Its
        calls become nodes named ``prefix + layer name`` (default ``node + "/"``), so later
        rewrites and range placement see each of them. Returns the new node ids, in order.
        """
        inner = _functional_of(functional, role="replacement")
        in_edges = sorted(self.dag.in_edges(node, data=True), key=lambda e: e[2]["dst_index"])
        outputs = self.dag.nodes[node]["outputs"]
        if len(inner.inputs) != len(in_edges) or len(inner.outputs) != len(outputs):
            raise GraphRewriteError(
                f"Cannot inline {functional.name!r} at {node!r}: the node takes {len(in_edges)} and gives "
                f"{len(outputs)} tensors, the model takes {len(inner.inputs)} and gives {len(inner.outputs)}."
            )
        tensor_source = {id(t): (u, d["src_index"]) for t, (u, _, d) in zip(inner.inputs, in_edges)}
        staging = nx.MultiDiGraph()
        staging.add_nodes_from(u for u, _, _ in in_edges)
        prefix = f"{node}/" if prefix is None else prefix
        base = self.dag.nodes[node]["order"]
        size = sum(len(nodes) for nodes in inner._nodes_by_depth.values()) + 1
        orders = (base + (k + 1) / (size + 1) for k in itertools.count())
        _add_functional(staging, inner, prefix, tensor_source, orders)
        new_nodes = [n for n in staging if "layer" in staging.nodes[n]]
        clashes = [n for n in new_nodes if n in self.dag]
        if clashes:
            raise GraphRewriteError(f"Cannot inline {functional.name!r} at {node!r}: node ids {clashes} already exist.")
        self.dag.add_nodes_from((n, staging.nodes[n]) for n in new_nodes)
        self.dag.add_edges_from(staging.edges(data=True))
        sources = [tensor_source[id(t)] for t in inner.outputs]
        for _, consumer, key, data in list(self.dag.out_edges(node, keys=True, data=True)):
            source, index = sources[data["src_index"]]
            self.dag.add_edge(source, consumer, **{**data, "src_index": index})
        self.outputs = [sources[i] if n == node else (n, i) for n, i in self.outputs]
        self.dag.remove_node(node)
        return sorted(new_nodes, key=lambda n: self.dag.nodes[n]["order"])

    # ----------------------------------------------------------------- rebuild
    def rebuild(self, name: str | None = None, clone: bool = False) -> keras.Model:
        """Build a ``keras.Model`` from the graph.

        With ``clone=False`` the new model calls the same layer objects (weights are
        shared with the original model); with ``clone=True`` every layer is copied with
        its weights, so the new model is independent of the original one.
        """
        from kopt.graph.rebuild import rebuild_model

        return rebuild_model(self, name=name, clone=clone)


# --------------------------------------------------------------------- analyze
def analyze(model: keras.Model, open_composites: bool = True) -> ModelGraph:
    """Turn a Functional or Sequential Keras model into a :class:`ModelGraph`.

    With ``open_composites`` (the default) custom layers built from sublayers and ``keras.ops``
    are replaced by the calls inside them (:mod:`kopt.graph.composite`), so every technique
    reaches their kernels; those that cannot be opened are listed in ``closed_composites``.
    """
    functional = _functional_of(model, role="model")
    dag = nx.MultiDiGraph()
    counter = itertools.count()
    tensor_source: dict[int, tuple[str, int]] = {}
    input_ids: list[str] = []
    for tensor in functional.inputs:
        input_layer = tensor._keras_history.operation
        node_id = _fresh_id(dag, input_layer.name)
        dag.add_node(
            node_id,
            layer=input_layer,
            kind="input",
            arguments=None,
            tensors=[],
            outputs=[tensor],
            order=next(counter),
        )
        tensor_source[id(tensor)] = (node_id, 0)
        input_ids.append(node_id)

    _add_functional(dag, functional, prefix="", tensor_source=tensor_source, counter=counter)
    outputs = [tensor_source[id(t)] for t in functional.outputs]
    graph = ModelGraph(
        dag=dag,
        inputs=input_ids,
        outputs=outputs,
        inputs_struct=functional._inputs_struct,
        outputs_struct=functional._outputs_struct,
        name=model.name,
    )
    if open_composites:
        from kopt.graph.composite import open_composites as open_all

        graph.closed_composites = open_all(graph)
    return graph


def _functional_of(model: Any, role: str) -> Functional:
    """The Functional graph behind ``model``, or a clear error saying what to do."""
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise UnsupportedModelError(
                f"The Sequential {role} {model.name!r} has not been built, so its graph is unknown. "
                "Build it first: start it with `keras.Input(shape=...)`, or call `model.build(input_shape)` "
                "or the model itself on a batch of data."
            )
        return functional
    if isinstance(model, Functional):
        return model
    if isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"{type(model).__name__} ({model.name!r}) is a subclassed Keras model: its graph cannot be read. "
            "Rewrite it as a Functional or Sequential model, or wrap its layers individually "
            "(e.g. `kopt.sparsity.prune_low_magnitude(layer)` on each layer)."
        )
    raise UnsupportedModelError(
        f"Expected a keras.Model (Functional or Sequential), got {type(model).__name__}. "
        "Build a Keras 3 model (`keras.Model(inputs, outputs)` or `keras.Sequential([...])`); "
        "Keras 2 / tf_keras models are not supported."
    )


def _is_flattenable(operation: Any) -> bool:
    if isinstance(operation, keras.Sequential):
        return getattr(operation, "_functional", None) is not None
    return isinstance(operation, Functional)


def _add_functional(
    dag: nx.MultiDiGraph,
    functional: Functional,
    prefix: str,
    tensor_source: dict[int, tuple[str, int]],
    counter: Iterator[int],
) -> None:
    """Add the calls of ``functional`` to ``dag``; its inputs must already be in ``tensor_source``."""
    call_rank = _call_ranks(functional)
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for keras_node in functional._nodes_by_depth[depth]:
            if keras_node.is_input or keras_node.operation is None:
                continue
            operation = keras_node.operation
            tensors = list(keras_node.arguments.keras_tensors)
            unknown = [t for t in tensors if id(t) not in tensor_source]
            if unknown:
                raise UnsupportedModelError(
                    f"Layer {operation.name!r} in model {functional.name!r} consumes a tensor that is not "
                    "computed from the model's inputs; kopt cannot place it in the graph."
                )
            rank = call_rank[id(keras_node)]
            base = prefix + operation.name + (f":{rank}" if rank else "")
            if _is_flattenable(operation):
                inner = _functional_of(operation, role="sub-model")
                if len(inner.inputs) != len(tensors):
                    raise UnsupportedModelError(
                        f"Sub-model {operation.name!r} was called with {len(tensors)} tensors but has "
                        f"{len(inner.inputs)} inputs; kopt cannot flatten it."
                    )
                for inner_input, outer_tensor in zip(inner.inputs, tensors):
                    tensor_source[id(inner_input)] = tensor_source[id(outer_tensor)]
                _add_functional(dag, inner, base + "/", tensor_source, counter)
                for inner_output, outer_output in zip(inner.outputs, keras_node.outputs):
                    tensor_source[id(outer_output)] = tensor_source[id(inner_output)]
                continue
            node_id = base
            is_layer = isinstance(operation, keras.layers.Layer)
            dag.add_node(
                node_id,
                layer=operation,
                kind="layer" if is_layer else "op",
                arguments=keras_node.arguments,
                tensors=tensors,
                outputs=list(keras_node.outputs),
                order=next(counter),
            )
            for slot, tensor in enumerate(tensors):
                source, out_index = tensor_source[id(tensor)]
                dag.add_edge(
                    source,
                    node_id,
                    src_index=out_index,
                    dst_index=slot,
                    shape=tuple(tensor.shape),
                    dtype=tensor.dtype,
                )
            for out_index, tensor in enumerate(keras_node.outputs):
                tensor_source[id(tensor)] = (node_id, out_index)


def _call_ranks(functional: Functional) -> dict[int, int]:
    """For each call in ``functional``: 0 for its layer's first call in this model, 1 for the next..."""
    calls: dict[int, list] = {}
    for nodes in functional._nodes_by_depth.values():
        for keras_node in nodes:
            if keras_node.operation is not None and not keras_node.is_input:
                calls.setdefault(id(keras_node.operation), []).append(keras_node)
    ranks = {}
    for keras_nodes in calls.values():
        inbound = keras_nodes[0].operation._inbound_nodes
        for rank, keras_node in enumerate(sorted(keras_nodes, key=inbound.index)):
            ranks[id(keras_node)] = rank
    return ranks


def _fresh_id(dag: nx.MultiDiGraph, base: str) -> str:
    """``base``, or ``base:1``, ``base:2``... if taken."""
    candidate, k = base, 1
    while candidate in dag:
        candidate, k = f"{base}:{k}", k + 1
    return candidate
