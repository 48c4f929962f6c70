"""Find subgraphs of a ModelGraph: fixed shapes by subgraph monomorphism, fan-ins by predecessor sets.

A :class:`Pattern` is a small DAG whose nodes are layer predicates (a class, a tuple of
classes, or a callable on the layer). Matching uses networkx's VF2 monomorphism search
(no enumeration of paths, so residual nets stay cheap); a match whose intermediate
tensors are consumed outside the match is dropped, because rewriting it would change
what those other consumers see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import keras
import networkx as nx
from networkx.algorithms.isomorphism import DiGraphMatcher

from kopt.core.errors import InvalidArgumentTypeError
from kopt.graph.model_graph import ModelGraph

LayerPredicate = Union[type, tuple, Callable[[keras.Operation], bool]]


def as_predicate(spec: LayerPredicate) -> Callable[[keras.Operation], bool]:
    """A class or tuple of classes becomes an ``isinstance`` test; a callable is used as is."""
    if isinstance(spec, type) or (isinstance(spec, tuple) and all(isinstance(c, type) for c in spec)):
        return lambda layer: isinstance(layer, spec)
    if callable(spec):
        return spec
    raise InvalidArgumentTypeError(f"A pattern node must be a layer class, a tuple of classes or a callable, got {spec!r}.")


@dataclass(frozen=True)
class Pattern:
    """Named layer predicates and the edges between them.

    ``Pattern.chain(Conv2D, BatchNormalization, ReLU)`` is the common case. By default
    every matched node but the last must feed only the next node of the match
    (``private_intermediates=True``).
    """

    nodes: dict[str, LayerPredicate]
    edges: tuple[tuple[str, str], ...]
    private_intermediates: bool = True

    @classmethod
    def chain(cls, *specs: LayerPredicate, private_intermediates: bool = True) -> "Pattern":
        names = [f"p{i}" for i in range(len(specs))]
        return cls(dict(zip(names, specs)), tuple(zip(names, names[1:])), private_intermediates)

    def as_digraph(self) -> nx.DiGraph:
        pattern = nx.DiGraph()
        for name, spec in self.nodes.items():
            pattern.add_node(name, predicate=as_predicate(spec))
        pattern.add_edges_from(self.edges)
        return pattern


def find_matches(graph: ModelGraph, pattern: Pattern, overlapping: bool = False) -> list[dict[str, str]]:
    """Every occurrence of ``pattern``, as ``{pattern node: graph node}``, in execution order.

    With ``overlapping=False`` (the default) a graph node belongs to at most one match:
    the earliest match in execution order wins, which is what a rewrite pass wants.
    """
    pattern_graph = pattern.as_digraph()
    host = nx.DiGraph(graph.dag)
    position = {n: i for i, n in enumerate(graph.topological_nodes())}
    candidates = {
        n
        for n in host
        if graph.dag.nodes[n]["kind"] != "input"
        and any(p(graph.layer(n)) for _, p in pattern_graph.nodes(data="predicate"))
    }
    host = host.subgraph(candidates)

    def node_match(host_attrs: dict, pattern_attrs: dict) -> bool:
        return pattern_attrs["predicate"](host_attrs["layer"])

    matches = []
    for mapping in DiGraphMatcher(host, pattern_graph, node_match=node_match).subgraph_monomorphisms_iter():
        match = {p: h for h, p in mapping.items()}
        if pattern.private_intermediates and not _intermediates_private(graph, pattern_graph, match):
            continue
        matches.append(match)
    matches.sort(key=lambda m: sorted(position[n] for n in m.values()))
    if overlapping:
        return matches
    used: set[str] = set()
    kept = []
    for match in matches:
        if used.isdisjoint(match.values()):
            kept.append(match)
            used.update(match.values())
    return kept


def _intermediates_private(graph: ModelGraph, pattern_graph: nx.DiGraph, match: dict[str, str]) -> bool:
    members = set(match.values())
    for pattern_node, host_node in match.items():
        if pattern_graph.out_degree(pattern_node) == 0:
            continue
        if graph.is_output(host_node):
            return False
        if any(v not in members for v in graph.dag.successors(host_node)):
            return False
    return True


def find_fan_ins(graph: ModelGraph, spec: LayerPredicate) -> list[tuple[str, list[str]]]:
    """Each node matching ``spec`` with its producers in input-slot order (any number of inputs).

    This is the variable-arity pattern ("any ``Concatenate`` and its producers") that a
    fixed-size pattern cannot express without one pattern per arity.
    """
    predicate = as_predicate(spec)
    return [
        (node, graph.producers(node))
        for node in graph.topological_nodes()
        if graph.dag.nodes[node]["kind"] != "input" and predicate(graph.layer(node))
    ]


def find_nodes(graph: ModelGraph, spec: LayerPredicate) -> list[str]:
    """Nodes whose layer matches ``spec``, in execution order."""
    predicate = as_predicate(spec)
    return [n for n in graph.topological_nodes() if graph.dag.nodes[n]["kind"] != "input" and predicate(graph.layer(n))]


def replace_matches(
    graph: ModelGraph,
    pattern: Pattern,
    build: Callable[[ModelGraph, dict[str, str]], keras.layers.Layer | None],
) -> list[str]:
    """Fuse each (non-overlapping) match into the layer ``build(graph, match)`` returns.

    ``build`` may return ``None`` to leave a match alone. Returns the new node ids.
    """
    new_nodes = []
    for match in find_matches(graph, pattern):
        layer = build(graph, match)
        if layer is not None:
            ordered: Sequence[str] = sorted(match.values(), key=lambda n: graph.dag.nodes[n]["order"])
            new_nodes.append(graph.fuse(ordered, layer))
    return new_nodes
