"""Keras model <-> networkx DAG: analysis, pattern matching, rewrites and rebuild."""

from kopt.graph.model_graph import ModelGraph, analyze
from kopt.graph.patterns import Pattern, find_fan_ins, find_matches, find_nodes, replace_matches
from kopt.graph.rebuild import clone_layer
from kopt.graph.rewrite import map_layers

__all__ = [
    "ModelGraph",
    "Pattern",
    "analyze",
    "clone_layer",
    "find_fan_ins",
    "find_matches",
    "find_nodes",
    "map_layers",
    "replace_matches",
]
