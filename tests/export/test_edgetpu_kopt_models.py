"""check_edgetpu on models kopt lowers itself: the CPU ops are the ones Coral's documented rules predict.

The prediction is computed here independently of the checker: ops whose type is not on the Edge TPU's op
list, plus everything downstream of them in the op graph (networkx), stay on the CPU; the rest maps.
"""

import keras
import networkx as nx
import pytest
from export_testing import uniform
from keras import layers

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


def _deeplab_v3_like(size: int, classes: int = 3) -> keras.Model:
    """DeepLab v3's head on a tiny encoder: ASPP with image pooling (1x1 -> HxW) and a bilinear upsampling."""
    inp = keras.Input((size, size, 3))
    x = inp
    for filters in (8, 16, 16):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    pool = layers.Conv2D(8, 1, activation="relu")(layers.GlobalAveragePooling2D(keepdims=True)(x))
    pool = layers.UpSampling2D(x.shape[1], interpolation="bilinear")(pool)
    atrous = layers.Conv2D(8, 3, padding="same", dilation_rate=2, activation="relu")(x)
    x = layers.Concatenate()([layers.Conv2D(8, 1, activation="relu")(x), atrous, pool])
    x = layers.Conv2D(classes, 1)(layers.Conv2D(8, 1, activation="relu")(x))
    return keras.Model(inp, layers.Resizing(size, size, interpolation="bilinear")(x))


def _whole_number_upscaling(sg, op) -> bool:
    """Coral's resize limit as kopt documents it, restated on the tensor shapes (align_corners is off here)."""
    (_, h_in, w_in, _), (_, h_out, w_out, _) = sg.tensors[op.inputs[0]].shape, sg.tensors[op.outputs[0]].shape
    return all(out <= inp or out % inp == 0 for inp, out in ((h_in, h_out), (w_in, w_out)))


@pytest.mark.parametrize("size", [64, 60])
def test_deeplab_v3_like_segmenter_cpu_ops_follow_the_resize_rule(size):
    tflite = to_tflite(_deeplab_v3_like(size), representative_data=uniform((8, size, size, 3), low=0.0, high=1.0))
    sg = load(tflite).main
    dag = _op_graph(sg)

    own_problem = {
        op.index
        for op in sg.operators
        if op.name not in edgetpu_rules.EDGETPU_OPS or (op.name.startswith("RESIZE_") and not _whole_number_upscaling(sg, op))
    }
    predicted_cpu = own_problem.union(*(nx.descendants(dag, i) for i in own_problem))
    report = check_edgetpu(tflite)

    assert [op.name for op in sg.operators].count("RESIZE_BILINEAR") == 2
    assert {v.index for v in report.unmapped} == predicted_cpu
    assert report.fully_mapped == (size == 64)  # 64: x8 and x8 upscaling; 60: 8 -> 60 is x7.5
