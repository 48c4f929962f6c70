"""check_edgetpu on models kopt lowers itself: the CPU ops are the ones Coral's documented rules predict.

The prediction is computed here independently of the checker: ops whose type is not on the Edge TPU's op
list, plus everything downstream of them in the op graph (networkx), stay on the CPU; the rest maps.
"""

import keras
import networkx as nx
import pytest
from export_testing import uniform

from kopt.export import check_edgetpu, edgetpu_rules, to_tflite
from kopt.export.flatbuffer import load


def _op_graph(sg) -> nx.DiGraph:
    producer = {t: op.index for op in sg.operators for t in op.outputs}
    dag = nx.DiGraph()
    dag.add_nodes_from(op.index for op in sg.operators)
    dag.add_edges_from((producer[t], op.index) for op in sg.operators for t in op.inputs if t in producer)
    return dag


@pytest.mark.slow
def test_mobilenet_v3_small_keeps_hard_swish_and_everything_after_it_on_the_cpu():
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(96, 96, 3), classes=10)
    tflite = to_tflite(model, representative_data=uniform((8, 96, 96, 3), low=0.0, high=255.0))
    sg = load(tflite).main
    dag = _op_graph(sg)

    not_on_the_list = {op.index for op in sg.operators if op.name not in edgetpu_rules.EDGETPU_OPS}
    predicted_cpu = not_on_the_list.union(*(nx.descendants(dag, i) for i in not_on_the_list))
    report = check_edgetpu(tflite)

    assert {sg.operators[i].name for i in not_on_the_list} == {"HARD_SWISH"}
    assert {v.index for v in report.unmapped} == predicted_cpu
    first = min(not_on_the_list)
    assert {v.index for v in report.ops if v.mapped} == nx.ancestors(dag, first)  # Rescaling + stem conv
    for verdict in report.unmapped:
        own = verdict.index in not_on_the_list
        assert verdict.reasons[0].startswith("Operation not supported" if own else "More than one subgraph"), verdict
    assert report.first_unsupported.index == first and not report.fully_mapped
