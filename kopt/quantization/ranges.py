"""Where activation fake-quants go, and which tensors share a range.

Every float tensor of an int8 TFLite model has one (scale, zero point). This module
decides, from each node's :class:`QuantizeConfig` ``output`` rule, which tensors must carry
an :class:`ActivationQuantize` and which must share one:

* a ``"range"`` node's output gets its own fake-quant — unless the node fuses
  activations and its only consumer is a ReLU / ReLU6, in which case only the
  activation's output is quantized (TFLite runs the pair as one op);
* a ``"passthrough"`` node's output *is* its input's range (pooling, reshape, pad...):
  no fake-quant, which would only add a requantize op;
* a ``"shared"`` node (Concatenate) unites the ranges of all its inputs and its
  output: union-find over tensors gives range groups, and each group gets *one*
  ActivationQuantize layer called on every tensor of the group that needs a
  fake-quant. The concat inputs then have equal scales by construction, so TFLite
  needs no requantization and the trained ranges are what the converter uses
  (TFMOT issue #1053);
* a ``"fixed"`` node's output (softmax, sigmoid, tanh) has its parameters imposed by TFLite: when a
  quantized node consumes it, it gets a fake-quant with exactly that range (``fixed_range``; softmax:
  ``[0, 255/256]``, scale 1/256), so in inference the next op sees the int8 kernel's rounded values,
  not the float ones (a ViT's attention weights were up to half a step off in every BATCH_MATMUL); the converter
  still writes the imposed parameters, as the range is theirs. A fixed output read only by float
  nodes or by nothing (a classifier's final softmax) gets none;
* a tensor whose producer has ``saturating_output`` (a decomposed LayerNorm's RSQRT) gets a
  ``saturating`` quantizer, which reads ``+inf`` as its range maximum;
* a tensor produced by a float (unquantized) node or a model input gets a fake-quant
  when a quantized node consumes it, so the quantized op has an input scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import keras
import networkx as nx

from kopt.graph import ModelGraph
from kopt.quantization.config import QuantizeConfig
from kopt.quantization.quantizers import ActivationQuantizer
from kopt.quantization.registry import fixed_output_range, has_nonnegative_output
from kopt.quantization.wrapper import ActivationQuantize

Tensor = tuple[str, int]  # (producer node, output index)


@dataclass
class RangePlan:
    """Range groups: the tensors that share one ActivationQuantize, and where it is called."""

    groups: list[list[Tensor]]
    fused: list[str]
    nonnegative: list[bool] = field(default_factory=list)
    saturating: list[bool] = field(default_factory=list)
    fixed: list[tuple[float, float] | None] = field(default_factory=list)

    @property
    def shared(self) -> list[list[Tensor]]:
        return [g for g in self.groups if len(g) > 1]


def plan_ranges(
    graph: ModelGraph,
    configs: dict[str, QuantizeConfig | None],
    is_fusable_activation: Callable[[keras.Operation], bool],
) -> RangePlan:
    """Decide the fake-quant sites (see the module docstring); the graph is not modified."""
    dag = graph.dag
    kinds: dict[Tensor, str] = {}
    groups = nx.utils.UnionFind()
    fused: list[str] = []

    def input_tensor(node: str, slot: int) -> Tensor | None:
        for u, _, data in dag.in_edges(node, data=True):
            if data["dst_index"] == slot:
                return (u, data["src_index"])
        return None

    for node in graph.topological_nodes():
        data = dag.nodes[node]
        outputs = [(node, i) for i in range(len(data["outputs"]))]
        for tensor in outputs:
            groups[tensor]  # register every tensor, even a lone one
        config = configs.get(node) if data["kind"] != "input" else None
        rule = "float" if config is None else config.output
        if rule == "passthrough":
            source = input_tensor(node, 0)
            for tensor in outputs:
                kinds[tensor] = "alias"
                if source is not None:
                    groups.union(source, tensor)
        elif rule == "shared":
            members = outputs + [input_tensor(node, s) for s in range(len(data["tensors"]))]
            groups.union(*[m for m in members if m is not None])
            kinds.update({t: "alias" for t in outputs})
        else:
            kinds.update({t: rule for t in outputs})
        for tensor, symbolic in zip(outputs, data["outputs"]):
            if not _is_float(symbolic):
                kinds[tensor] = "none"

    # Activation fusing: CONV/FC/ADD/MUL + ReLU(6) are one TFLite op, quantized after the ReLU.
    for node in graph.topological_nodes():
        config = configs.get(node)
        if config is None or config.output != "range" or not config.fuses_activation:
            continue
        if len(dag.nodes[node]["outputs"]) != 1 or graph.is_output(node):
            continue
        out_edges = list(dag.out_edges(node))
        if len(out_edges) != 1:
            continue
        consumer = out_edges[0][1]
        consumer_config = configs.get(consumer)
        if consumer_config is not None and consumer_config.output == "range" and is_fusable_activation(graph.layer(consumer)):
            kinds[(node, 0)] = "fused"
            fused.append(node)

    consumers_needing_range = {
        node for node, config in configs.items() if config is not None and config.output in ("range", "fixed")
    }
    planned: list[list[Tensor]] = []
    for members in groups.to_sets():
        members = sorted(members, key=lambda t: (dag.nodes[t[0]]["order"], t[1]))
        own = [t for t in members if kinds.get(t) == "range"]
        consumed = any(
            v in consumers_needing_range
            for t in members
            for _, v, d in dag.out_edges(t[0], data=True)
            if d["src_index"] == t[1]
        )
        if not own and not consumed:
            continue  # a float region
        sites = [t for t in members if kinds.get(t) in ("range", "float")]
        fixed = [t for t in members if kinds.get(t) == "fixed"]
        if fixed and sites:
            sites += fixed  # a fixed-range tensor inside a shared group must adopt the group's range
        elif fixed and consumed and len(fixed) == 1 and fixed_output_range(graph.layer(fixed[0][0])) is not None:
            sites = fixed  # the imposed range, fake-quantized for the op that reads it
        if not sites:
            continue
        planned.append(sorted(sites, key=lambda t: (dag.nodes[t[0]]["order"], t[1])))
    planned.sort(key=lambda g: (dag.nodes[g[0][0]]["order"], g[0][1]))
    nonnegative = [all(has_nonnegative_output(graph.layer(node)) for node, _ in group) for group in planned]
    saturating = [any(_has_saturating_output(graph.layer(node)) for node, _ in group) for group in planned]
    fixed_ranges = [
        fixed_output_range(graph.layer(group[0][0])) if len(group) == 1 and kinds.get(group[0]) == "fixed" else None
        for group in planned
    ]
    return RangePlan(groups=planned, fused=fused, nonnegative=nonnegative, saturating=saturating, fixed=fixed_ranges)


def insert_activation_quantizers(graph: ModelGraph, plan: RangePlan, quantizer: ActivationQuantizer) -> list[str]:
    """Insert one ActivationQuantize per range group, called after each of its tensors."""
    used_names = {getattr(graph.layer(n), "name", "") for n in graph.dag}
    inserted = []
    for position, group in enumerate(plan.groups):
        producer = graph.layer(group[0][0])
        base = f"{getattr(producer, 'name', group[0][0])}_quant".replace("/", "_")
        name, k = base, 1
        while name in used_names:
            name, k = f"{base}_{k}", k + 1
        used_names.add(name)
        nonnegative = plan.nonnegative[position] if plan.nonnegative else False
        saturating = plan.saturating[position] if plan.saturating else False
        fixed = plan.fixed[position] if plan.fixed else None
        if fixed is not None and (quantizer.num_bits != 8 or quantizer.symmetric):
            continue  # the imposed ranges are the int8 kernels' (16x8 has its own): leave it to TFLite
        layer = ActivationQuantize(quantizer.with_calls(len(group), nonnegative, saturating, fixed), name=name)
        for node, index in group:
            inserted.append(graph.insert_after(node, layer, output_index=index, name=name))
    return inserted


def _has_saturating_output(layer: keras.Operation) -> bool:
    """The layer writes ``+inf`` where its int8 TFLite kernel saturates (``saturating_output``, e.g.
    :class:`~kopt.quantization.decompose.SaturatingRsqrt`): its range must be learnt from finite values."""
    return bool(getattr(layer, "saturating_output", False))


def _is_float(tensor: keras.KerasTensor) -> bool:
    dtype = getattr(tensor, "dtype", None)
    return dtype is not None and "float" in str(dtype)
