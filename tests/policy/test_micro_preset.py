"""The 'micro' preset: PCQAT 50 % / 16 lowered for TFLite Micro through kopt.optimize."""

import keras
import numpy as np
import pytest

import kopt
from kopt.export import check_micro, load_tflite, to_tflite
from tests.optimize_testing import compile_model, digits, tiny_dense

tflm_runtime = pytest.importorskip("tflite_micro").runtime


@pytest.mark.slow  # three fine-tuning stages: ~30 s on a shared 2-core machine
def test_micro_preset_returns_a_smaller_tflm_file_with_the_same_int8_outputs():
    keras.utils.set_random_seed(0)
    x, y, x_val, y_val = digits()
    model = compile_model(tiny_dense())
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    result = kopt.optimize(model, "micro", train_data=(x, y), validation_data=(x_val, y_val), epochs=1,
                           batch_size=32, seed=3, verbose=0)
    assert result.policy.target == "micro"
    uncompressed = to_tflite(result.model)  # the QAT model's own int8 file
    report = check_micro(result.tflite)
    assert report.runs and report.compressed_tensors >= 1 and report.flash_bytes < len(uncompressed)
    assert any(op.custom_code == "TFLM_DECODE" for op in load_tflite(result.tflite).main.operators)
    notes = [n for stage in result.report.stages for n in stage.notes if n.startswith("TFLite Micro:")]
    assert notes and f"{report.flash_bytes:,} B flash" in notes[0]
    # TFLM's interpreter: the compressed file computes exactly what the uncompressed one does.
    graph = load_tflite(uncompressed).main
    quantization = graph.tensors[graph.inputs[0]].quantization
    scale, zero = quantization.scales[0], quantization.zero_points[0]
    samples = np.clip(np.rint(x_val[:20] / scale) + zero, -128, 127).astype(np.int8)
    outputs = []
    for tflite in (uncompressed, result.tflite):
        interpreter = tflm_runtime.Interpreter.from_bytes(tflite, arena_size=1 << 20)
        rows = []
        for sample in samples:
            interpreter.set_input(sample[None], 0)
            interpreter.invoke()
            rows.append(np.array(interpreter.get_output(0)))
        outputs.append(np.concatenate(rows))
    np.testing.assert_array_equal(outputs[0], outputs[1])
