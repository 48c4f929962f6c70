"""Small models and helpers shared by the kopt.export tests (imported by the test modules).

The fake-quant layers here are a minimal stand-in for kopt's QAT package: they put
``keras.quantizers.fake_quant_with_min_max_vars`` on activations and weights with fixed or
weight-derived ranges, which is all the lowering needs to see.
"""

from __future__ import annotations

import os

import keras
import numpy as np
from keras import layers, ops

fake_quant = keras.quantizers.fake_quant_with_min_max_vars


@keras.saving.register_keras_serializable(package="kopt_tests")
class ActFQ(layers.Layer):
    """Activation fake-quant with a fixed range (asymmetric, 8 bits, not narrow)."""

    def __init__(self, lo: float, hi: float, **kwargs):
        super().__init__(**kwargs)
        self.lo, self.hi = float(lo), float(hi)

    def call(self, x):
        return fake_quant(x, self.lo, self.hi, num_bits=8, narrow_range=False)

    def get_config(self):
        return {**super().get_config(), "lo": self.lo, "hi": self.hi}


@keras.saving.register_keras_serializable(package="kopt_tests")
class QDense(layers.Layer):
    """Dense with symmetric, narrow-range, per-tensor weight fake-quant."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, shape):
        self.kernel = self.add_weight(shape=(shape[-1], self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros")

    def call(self, x):
        m = ops.max(ops.abs(self.kernel))
        return ops.matmul(x, fake_quant(self.kernel, -m, m, num_bits=8, narrow_range=True)) + self.bias

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="kopt_tests")
class QConv(layers.Layer):
    """3x3 'same' Conv2D + ReLU6 with per-output-channel symmetric weight fake-quant."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)

    def build(self, shape):
        self.kernel = self.add_weight(shape=(3, 3, shape[-1], self.filters), initializer="glorot_uniform")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros")

    def call(self, x):
        m = ops.max(ops.abs(self.kernel), axis=(0, 1, 2))
        w = fake_quant(self.kernel, -m, m, num_bits=8, narrow_range=True, axis=-1)
        return ops.relu6(ops.conv(x, w, padding="same") + self.bias)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def qat_model(shape=(8, 8, 3), classes=4, *, add_without_fake_quant=False) -> keras.Model:
    """A tiny fully fake-quantized CNN (or, with the flag, one whose Add output has no range)."""
    inp = keras.Input(shape)
    x = ActFQ(-1.0, 1.0)(inp)
    x = ActFQ(0.0, 6.0)(QConv(4)(x))
    if add_without_fake_quant:
        x = layers.Add()([x, ActFQ(0.0, 6.0)(QConv(4)(x))])
    x = ActFQ(0.0, 6.0)(layers.GlobalAveragePooling2D()(x))
    x = ActFQ(-8.0, 8.0)(QDense(classes)(x))
    return keras.Model(inp, layers.Softmax()(x))


def uniform(shape, seed=0, low=-1.0, high=1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype("float32")


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Coral's reference pairs, vendored with their license (see tests/fixtures/edgetpu/README.md).
EDGETPU_FIXTURES = os.path.join(REPO, "tests", "fixtures", "edgetpu")
REFERENCE_PAIRS = ("split_concat", "keras_lstm_mnist_ptq", "mobilenet_v1_0.25_128_quant")
#: Every plain/compiled pair in the fixtures folder, including the ones the compiler maps only partly.
EDGETPU_PAIRS = REFERENCE_PAIRS + (
    "deeplabv3_mnv2_pascal_quant",
    "movenet_single_pose_lightning_ptq",
    "posenet_mobilenet_v1_075_481_641_16_quant_decoder",
)
COMPILED_CUSTOM_CODE = "edgetpu-custom-op"


def fixture_path(name: str) -> str:
    return os.path.join(EDGETPU_FIXTURES, f"{name}.tflite")


def compiler_mapped_ops(name: str) -> tuple[list[int], list[int]]:
    """(mapped, left on the CPU): op indices of ``NAME.tflite`` as Coral's compiler split them.

    The ground truth is read from ``NAME_edgetpu.tflite`` alone, with LiteRT's flatbuffer reader (not kopt's):
    there, the mapped ops were replaced by one ``edgetpu-custom-op`` and every other op was kept. Each kept op is
    matched to the one op of the plain file with the same type and the same input and output tensors (names and
    shapes; the compiler rewrites op versions, so they are ignored). The custom op's own inputs and outputs are
    then checked against the ops found mapped, so a mismatched derivation fails here rather than passing silently.
    """
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    def read(path):
        model = fbu.read_model(path)
        sg = model.subgraphs[0]

        def label(op):
            name = fbu.opcode_to_name(model, op.opcodeIndex)
            code = model.operatorCodes[op.opcodeIndex].customCode
            return f"{name}:{code.decode()}" if name == "CUSTOM" else name

        def tensors(indices):
            return tuple((sg.tensors[i].name.decode(), tuple(sg.tensors[i].shape)) for i in indices if i >= 0)

        def produced_outside(i):  # a constant (filled buffer) or a state variable, not an activation
            t = sg.tensors[i]
            data = model.buffers[t.buffer].data if 0 < t.buffer < len(model.buffers) else None
            return bool(t.isVariable) or (data is not None and len(data) > 0)

        ops = [(label(op), tensors(op.inputs), tensors(op.outputs)) for op in sg.operators]
        fed = [tensors([i for i in op.inputs if i >= 0 and not produced_outside(i)]) for op in sg.operators]
        return ops, fed, tensors(sg.inputs)

    plain, _, plain_inputs = read(fixture_path(name))
    compiled, compiled_fed, _ = read(fixture_path(f"{name}_edgetpu"))
    customs = [k for k, op in enumerate(compiled) if op[0] == f"CUSTOM:{COMPILED_CUSTOM_CODE}"]
    assert len(customs) == 1, f"{name}_edgetpu holds {len(customs)} Edge TPU custom ops"

    cpu: list[int] = []
    for k, op in enumerate(compiled):
        if k != customs[0]:
            candidates = [i for i, other in enumerate(plain) if other == op and i not in cpu]
            assert len(candidates) == 1, f"{name}: compiled op #{k} {op[0]} matches plain ops {candidates}"
            cpu.append(candidates[0])
    mapped = sorted(set(range(len(plain))) - set(cpu))

    # The custom op is fed by graph inputs or CPU ops (besides constants and state) and produces mapped ops' tensors.
    made_by_mapped = {t for i in mapped for t in plain[i][2]}
    made_outside = {t for i in cpu for t in plain[i][2]} | set(plain_inputs)
    assert set(compiled[customs[0]][2]) <= made_by_mapped, name
    assert set(compiled_fed[customs[0]]) <= made_outside, name
    return mapped, sorted(cpu)


def lower(build, shape, *, samples=16, **kwargs) -> bytes:
    """Post-training int8 of ``build(input) -> output`` on a ``shape`` input, with uniform data."""
    from kopt.export import to_tflite

    inp = keras.Input(shape)
    model = keras.Model(inp, build(inp))
    return to_tflite(model, representative_data=uniform((samples,) + tuple(shape)), **kwargs)


def mutate(tflite: bytes, edit) -> bytes:
    """``tflite`` re-serialized after ``edit(model_object)`` changed the schema object model."""
    from kopt.export.flatbuffer import read_object, to_bytes

    model = read_object(tflite)
    edit(model)
    return to_bytes(model)


def op_positions(tflite: bytes, name: str) -> list[int]:
    from kopt.export.flatbuffer import load

    return [op.index for op in load(tflite).main.operators if op.name == name]
