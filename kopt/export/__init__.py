"""Lowering to TFLite (full int8, 16x8, float16, dynamic range; TFLM-compressed, sparse), ``.tflite``
inspection, Edge TPU and TensorFlow Lite Micro checks.

``to_tflite`` needs TensorFlow (in this process under the TensorFlow backend, in a converter
subprocess otherwise); everything else reads the flatbuffer with LiteRT's generated schema and
runs models with the LiteRT interpreter, under any backend.
"""

from kopt.core.errors import ConversionError, CorruptTFLiteError, MissingRangesError, NotFullyIntegerError
from kopt.export.calibration import DEFAULT_CALIBRATION_SAMPLES
from kopt.export.edgetpu import EdgeTPUReport, OpVerdict, check_edgetpu
from kopt.export.flatbuffer import TFLiteModel
from kopt.export.flatbuffer import load as load_tflite
from kopt.export.inspection import TFLiteSummary, WeightTensor, inspect, tflite_size, weight_tensors, zipped_size
from kopt.export.lowering import to_tflite
from kopt.export.micro import MicroReport, check_micro
from kopt.export.runtime import evaluate, run

__all__ = [
    "CorruptTFLiteError",
    "DEFAULT_CALIBRATION_SAMPLES",
    "ConversionError",
    "EdgeTPUReport",
    "MicroReport",
    "MissingRangesError",
    "NotFullyIntegerError",
    "OpVerdict",
    "TFLiteModel",
    "TFLiteSummary",
    "WeightTensor",
    "check_edgetpu",
    "check_micro",
    "evaluate",
    "inspect",
    "load_tflite",
    "run",
    "tflite_size",
    "to_tflite",
    "weight_tensors",
    "zipped_size",
]
