"""``to_tflite``: lower a Keras 3 model to a TFLite flatbuffer (full int8, float16 or dynamic range).

The route that works with Keras 3 and TF 2.21 (``TFLiteConverter.from_keras_model`` does not):
write a SavedModel with a static input signature (batch 1 by default, the Edge TPU's shape),
then convert it with ``TFLiteConverter.from_saved_model``. The SavedModel is a lean one
(:func:`write_saved_model`): the model traced once by a ``tf.function`` and saved with only the
variables it reads. The converter gets the same graph as from ``model.export`` (same ops,
weights and outputs), and conversion takes about half the time (MobileNetV2 QAT: 20 s -> 10 s),
since ``model.export`` traces the model three times and walks every layer's trackables; it
remains the fallback. ``from_concrete_functions`` writes such a SavedModel itself by default;
its frozen-graph mode (faster still) writes no SignatureDef, which the calibrator with named
inputs and the signature runner need.

The result's tensors are then renamed after their Keras layers (:mod:`kopt.export.renaming`):
the converter names them after every op fused into them, which for a QAT model meant the
fake-quant and wrapper scopes too (MobileNetV2 QAT: 33 kB of names, 0.6% of the zipped file).

Only the TensorFlow backend can export, so a model built or trained under JAX or PyTorch is
saved to ``.keras`` and converted by a fresh Python process running the TensorFlow backend
(:mod:`kopt.export._subprocess_lower`).

Activation ranges for ``mode="int8"`` come from the model's fake-quant ops when it was trained
with quantization-aware training (detected in the exported graph), otherwise from
``representative_data`` (post-training quantization). Dense layers are quantized per-tensor
(TF 2.21 defaults to per-channel, which the TFLite spec and older delegates do not expect).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Literal

import keras
import numpy as np

from kopt.core.errors import (
    ConversionError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    KoptRuntimeWarning,
    MissingRangesError,
    UnsupportedModelError,
)
from kopt.core.validation import check_finite_weights
from kopt.export import diagnostics, renaming
from kopt.export.byte_inputs import anchored, byte_inputs, check_byte_input_scales, with_float_inputs
from kopt.export.calibration import DEFAULT_CALIBRATION_SAMPLES, InputSpec, batches, materialize
from kopt.export.requantize import fold_input_requantize
from kopt.export.rnn import rolled_recurrent_layers, unroll_recurrent_layers

Mode = Literal["int8", "int16x8", "float16", "dynamic"]
_MODES = ("int8", "int16x8", "float16", "dynamic")
_INTEGER_MODES = ("int8", "int16x8")
Target = Literal["tflite", "micro"]
_TARGETS = ("tflite", "micro")
_FAKE_QUANT_OPS = ("FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsPerChannel", "FakeQuantWithMinMaxArgs")


@dataclass(frozen=True)
class LoweringOptions:
    """The converter settings, plain data so they cross to the converting subprocess as JSON."""

    mode: str = "int8"
    io_type: str = "int8"  # "int8", "uint8" or "float32" (int8 mode only)
    batch_size: int | None = 1
    per_channel_dense: bool = False
    sparse: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_tflite(
    model: keras.Model,
    *,
    representative_data: Any = None,
    int8_io: bool | Literal["int8", "uint8"] = True,
    mode: Mode = "int8",
    batch_size: int | None = 1,
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    per_channel_dense: bool = False,
    isolate: bool | None = None,
    target: Target = "tflite",
    sparse: bool = False,
) -> bytes:
    """Convert ``model`` to a ``.tflite`` flatbuffer and return its bytes.

    Args:
        model: a built Keras model (Functional, Sequential, or subclassed with ``representative_data``).
        representative_data: samples for post-training int8 calibration: an array ``(N, ...)``,
            a list/dict of arrays for multi-input models, a generator (or generator function),
            a ``tf.data.Dataset`` or any iterable of ``x`` / ``(x, y)`` batches. At most
            ``calibration_samples`` samples are read (default 100), fed as batch-1 inputs.
            Not needed for a QAT model (its fake-quant ranges are used).
        int8_io: ``mode="int8"`` only. True / ``"int8"``: int8 inputs and outputs (nothing but
            integer ops in the graph); ``"uint8"``: uint8 I/O (one QUANTIZE at each end, as in
            Coral's models); False: float I/O with one QUANTIZE at the entry and one DEQUANTIZE
            at the exit.
        mode: ``"int8"`` (full integer: int8 activations and weights, int32 bias), ``"int16x8"``
            (int16 activations, int8 weights, int64 bias: the converter's 16x8 ops set, for models
            that lose too much at 8 bits; needs ``representative_data``, or a model trained with
            ``quantize_model(model, "int16x8")`` whose ranges are used; I/O int16, or float32
            with ``int8_io=False``), ``"float16"``
            (float16 weights) or ``"dynamic"`` (int8 weights, float activations; TF leaves
            weight tensors under 1024 elements in float).
        batch_size: static batch of the inputs (1 for the Edge TPU); None keeps it dynamic.
        calibration_samples: how many samples of ``representative_data`` to use.
        per_channel_dense: quantize Dense (FULLY_CONNECTED) weights per output channel
            (TF 2.21's default) instead of per-tensor (the TFLite spec; safe for the Edge TPU).
        isolate: convert in a fresh TensorFlow-backend Python process. Default: only when the
            current Keras backend is not TensorFlow.
        target: ``"tflite"`` (the converter's file) or ``"micro"``: the integer file for
            TensorFlow Lite Micro with every tensor of <= 128 distinct values (per tensor or per
            channel) LUT-compressed, each kept only if the TFLM interpreter's outputs stay
            bit-identical (:func:`kopt.export.micro.compress`; needs ``tflite-micro``).
        sparse: store pruned weights in TFLite's sparse format (the converter's
            ``EXPERIMENTAL_SPARSITY``), verified against the dense file in LiteRT
            (:mod:`kopt.export.sparse`); the dense file is returned, with a warning, if the
            sparse one is not smaller or its outputs differ by more than one quantization step.

    Raises:
        MissingRangesError: ``mode="int8"`` with neither fake-quant ops nor representative data.
        ConversionError: the converter failed; ``.op`` and ``.layer`` name the culprit.
        NotFullyIntegerError: ``mode="int8"`` but some ops still compute in float.
    """
    io_type = _validate(model, representative_data, int8_io, mode, batch_size, calibration_samples, target, sparse)
    check_finite_weights(model, "kopt.export.to_tflite")
    options = LoweringOptions(mode, io_type, batch_size, bool(per_channel_dense), bool(sparse))
    specs = input_specs(model)
    data = None
    if representative_data is not None:
        data = materialize(representative_data, specs, calibration_samples)
        specs = [InputSpec(s.key, tuple(a.shape[1:]), s.dtype) for s, a in zip(specs, data)]
    unknown = [s.key for s in specs if s.shape is None or any(d is None for d in s.shape)]
    if unknown:
        raise InvalidArgumentError(
            f"input(s) {unknown} of model '{model.name}' have unknown dimensions {[s.shape for s in specs]}: "
            "build the model with a fully defined input shape or pass representative_data"
        )
    byte_specs = specs if mode == "int8" and byte_inputs(specs) else None
    if byte_specs is not None:  # images as bytes: lowered from float32 inputs of the same values (kopt.export.byte_inputs)
        model = with_float_inputs(model)
        data = None if data is None else anchored(data, specs)
        specs = [InputSpec(s.key, s.shape, "float32" if s.key in byte_inputs(specs) else s.dtype) for s in specs]
    if isolate is None:
        isolate = keras.backend.backend() != "tensorflow"
    rolled: list[str] = []
    if mode == "int8":  # TF 2.21 segfaults calibrating a rolled Keras RNN: lower it unrolled (kopt.export.rnn)
        model = unroll_recurrent_layers(model)
        rolled = [layer.name for layer in rolled_recurrent_layers(model)]  # left inside a composite layer
        isolate = isolate or bool(rolled)  # a converter crash then ends a child process, not this one
    tflite = _lower(model, data, specs, options, isolate, rolled)
    if byte_specs is not None:
        check_byte_input_scales(tflite, byte_specs, io_type, model.name)
    if sparse:
        from kopt.export import sparse as sparse_export

        dense = _lower(model, data, specs, LoweringOptions(**{**options.to_dict(), "sparse": False}), isolate, rolled)
        tflite = sparse_export.verified(tflite, dense, data, model.name)
    if target == "micro":
        from kopt.export import micro

        tflite = micro.compress(tflite, x=data if data is None or len(data) > 1 else data[0]).tflite
    return tflite


def _lower(model, data, specs, options: LoweringOptions, isolate: bool, rolled: list[str]) -> bytes:
    if isolate:
        from kopt.export._subprocess_lower import lower_in_subprocess

        try:
            return lower_in_subprocess(model, data, options)
        except ConversionError as error:
            if not rolled:
                raise
            raise ConversionError(
                f"{error}\nThe model has recurrent layer(s) {rolled} inside custom layers that kopt cannot unroll; "
                "TF 2.21's converter crashes calibrating a rolled Keras RNN to int8. Build them with unroll=True "
                "(and a fixed sequence length).",
                op=error.op,
                layer=rolled[0],
            ) from error
    return lower_in_process(model, data, specs, options)


def input_specs(model: keras.Model) -> list[InputSpec]:
    """Name, per-sample shape and dtype of each model input, in the model's flat input order."""
    inputs = _model_inputs(model)
    if inputs is None:
        return _unknown_inputs(model)
    struct, flat_with_paths = inputs
    specs, used = [], set()
    for path, tensor in flat_with_paths:
        if isinstance(struct, dict) and path:
            key = str(path[0])
        else:
            key = _sanitize(getattr(tensor, "name", None) or f"input_{len(specs)}")
        while key in used:
            key = f"{key}_{len(specs)}"
        used.add(key)
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        specs.append(InputSpec(key, tuple(tensor.shape[1:]), dtype))
    return specs


def lower_in_process(
    model: keras.Model, data: list[np.ndarray] | None, specs: list[InputSpec], options: LoweringOptions
) -> bytes:
    """The TensorFlow-backend conversion (the current process must run the TensorFlow backend)."""
    if keras.backend.backend() != "tensorflow":
        raise ConversionError("lower_in_process needs KERAS_BACKEND=tensorflow; use to_tflite()")
    import tensorflow as tf

    names = diagnostics.layer_names(model)
    with tempfile.TemporaryDirectory(prefix="kopt_export_") as tmp:
        saved = os.path.join(tmp, "saved_model")
        signature = _input_signature(model, specs, options.batch_size)
        write_saved_model(model, signature, saved)
        fake_quant = has_fake_quant(saved)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        _configure(converter, tf, options, data, specs, fake_quant, model.name)
        try:
            with warnings.catch_warnings(), collecting_only_new_objects():
                warnings.simplefilter("ignore")
                tflite = bytes(converter.convert())
        except Exception as error:  # noqa: BLE001 - re-raised with the op and layer at fault
            raise diagnostics.conversion_error(error, names) from error
    if options.mode in _INTEGER_MODES and fake_quant and data is not None and options.io_type != "float32":
        tflite = fold_input_requantize(tflite)  # trained and calibrated input ranges differ (kopt.export.requantize)
    if options.mode in _INTEGER_MODES:
        diagnostics.require_full_integer(tflite, names, calibrated=data is not None)
    if options.mode == "int16x8" and fake_quant:
        from kopt.export.int16x8 import widen_biases

        tflite = widen_biases(tflite)  # the QAT route leaves int32 biases, which LiteRT's int16 conv misreads
    return _renamed(tflite, model)


@contextlib.contextmanager
def collecting_only_new_objects() -> Iterator[None]:
    """Within this block, a garbage collection scans only the objects created inside it.

    TensorFlow's converter calls ``gc.collect()`` on every conversion, which walks every object
    alive: ~450,000 once TensorFlow is imported, about a second, a third of a small model's
    conversion. Objects alive before the conversion are frozen for its duration (``gc.freeze``;
    any garbage among them waits for the next ordinary collection). An application that freezes
    objects itself (``gc.get_freeze_count() > 0``) is left alone.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _renamed(tflite: bytes, model: keras.Model) -> bytes:
    """``tflite`` with Keras-layer tensor names; the converter's names if renaming fails (they
    only cost size, so a renaming bug must not cost the conversion)."""
    try:
        return renaming.rename_tensors(tflite, renaming.catalog(model))
    except Exception as error:  # noqa: BLE001 - reported, the unrenamed file is still valid
        warnings.warn(
            f"kopt.export.to_tflite: could not shorten the tensor names of model '{model.name}' "
            f"({type(error).__name__}: {error}); the .tflite keeps the converter's names. Please report this.",
            KoptRuntimeWarning,
            stacklevel=3,
        )
        return tflite


def write_saved_model(model: keras.Model, signature: list, path: str) -> None:
    """Write ``model``'s inference function (``model(x)``, traced once) as a SavedModel at ``path``.

    The same traced function ``model.export`` writes, without its extra traces and trackable
    walk; a model whose function captures more than variables (e.g. a lookup table, which
    ``tf.saved_model.save`` refuses as untracked) goes through Keras' ``ExportArchive`` instead
    (what ``model.export`` uses, which tracks such resources), with the same ``training=False`` call.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _lean_saved_model(model, signature, path)
        return
    except Exception:  # noqa: BLE001 - the ExportArchive below reports the error if it fails too
        shutil.rmtree(path, ignore_errors=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint("serve", _inference(model), input_signature=signature)
            archive.write_out(path, verbose=False)
    except Exception as error:  # noqa: BLE001 - re-raised with context
        message = f"exporting model '{model.name}' to a TensorFlow SavedModel failed: {error}"
        raise ConversionError(message) from error


def _lean_saved_model(model: keras.Model, signature: list, path: str) -> None:
    """What ``model.export`` saves (``tf.function(model.__call__)`` as ``serving_default``), with
    a bare ``tf.Module`` holding only the variables the traced function reads.

    The model is called with ``training=False`` explicitly (as Keras' own LiteRT export does): left
    unset, a layer whose ``call`` defaults to ``training=True`` (``keras.layers.Resizing`` and the other
    image preprocessing layers) resolves it to True and Keras passes that on to every layer called after
    it. A SegFormer or DeepLabV3 head after its Resizing then traced BatchNorm and fake-quant range
    updates (AssignVariableOp): the converter cannot freeze such variables and leaves the FakeQuant ops
    unconverted (``'tf.FakeQuantWithMinMaxVars' op is neither a custom op nor a flex op``).
    """
    import tensorflow as tf

    function = tf.function(_inference(model), input_signature=signature, autograph=False)
    concrete = function.get_concrete_function()
    root = tf.Module()
    root.model_variables = list(concrete.variables)
    tf.saved_model.save(root, path, signatures={"serving_default": concrete})


def _inference(model: keras.Model) -> Any:
    """``model(x, training=False)``: see :func:`_lean_saved_model` for why it is explicit."""
    return functools.partial(model.__call__, training=False)


def has_fake_quant(saved_model_dir: str) -> bool:
    """Whether an exported SavedModel contains FakeQuant ops (the model was trained with QAT)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    for graph in proto.meta_graphs:
        nodes = list(graph.graph_def.node)
        for function in graph.graph_def.library.function:
            nodes.extend(function.node_def)
        if any(node.op in _FAKE_QUANT_OPS for node in nodes):
            return True
    return False


def _configure(converter, tf, options: LoweringOptions, data, specs, fake_quant: bool, model_name: str) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if options.sparse:
        converter.optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    if options.mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
        return
    if options.mode == "dynamic":
        return
    if options.mode == "int16x8" and data is None:  # 16x8 QAT: ranges from the 16-bit fake-quants
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if data is not None:
        keys = [s.key for s in specs]
        converter.representative_dataset = lambda: batches(data, keys)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            if options.mode == "int16x8"
            else tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
    elif not fake_quant:
        raise MissingRangesError(
            f"mode='int8' needs activation ranges, and model '{model_name}' has neither: it contains no "
            "fake-quant ops (it was not trained with quantization-aware training) and no "
            "representative_data was given. Pass representative_data=<array of input samples, a "
            f"generator or a tf.data.Dataset> (up to {DEFAULT_CALIBRATION_SAMPLES} samples are used by "
            "default), or quantize the model for QAT first."
        )
    # A QAT graph without representative data must not request TFLITE_BUILTINS_INT8: TF 2.21 then
    # demands a representative dataset even though every range is known. Full-integer-ness is
    # verified on the result instead.
    io = {"int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16, "float32": tf.float32}[options.io_type]
    converter.inference_input_type = io
    converter.inference_output_type = io
    converter._experimental_disable_per_channel_quantization_for_dense_layers = not options.per_channel_dense


def _validate(model, representative_data, int8_io, mode, batch_size, calibration_samples, target, sparse) -> str:
    """Check every argument before anything runs; return the I/O type."""
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"to_tflite expects a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise UnsupportedModelError(f"model '{model.name}' is not built: call it on data or give it an Input first")
    from kopt.core.data import check_numeric_model

    check_numeric_model(model, "kopt.export.to_tflite")
    if mode not in _MODES:
        raise InvalidArgumentError(f"mode must be one of {_MODES}, got {mode!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InvalidArgumentError(f"batch_size must be a positive int or None (dynamic), got {batch_size!r}")
    if isinstance(calibration_samples, bool) or not isinstance(calibration_samples, int) or calibration_samples < 1:
        raise InvalidArgumentError(f"calibration_samples must be a positive int, got {calibration_samples!r}")
    io_types = {True: "int8", "int8": "int8", "uint8": "uint8", False: "float32"}
    if not isinstance(int8_io, (bool, str)) or int8_io not in io_types:
        raise InvalidArgumentError(f"int8_io must be True, False, 'int8' or 'uint8', got {int8_io!r}")
    if mode not in _INTEGER_MODES and representative_data is not None:
        raise InvalidArgumentError(f"representative_data is only used by mode='int8' or 'int16x8' (got mode={mode!r})")
    if target not in _TARGETS:
        raise InvalidArgumentError(f"target must be one of {_TARGETS}, got {target!r}")
    if target == "micro" and mode not in _INTEGER_MODES:
        raise InvalidArgumentError(f"target='micro' needs an integer model (mode='int8' or 'int16x8'), got mode={mode!r}")
    if not isinstance(sparse, bool):
        raise InvalidArgumentTypeError(f"sparse must be True or False, got {sparse!r}")
    _check_activation_bits(model, mode, representative_data)
    if mode == "int16x8":
        if int8_io == "uint8":
            raise InvalidArgumentError("mode='int16x8' has int16 (int8_io=True) or float32 (int8_io=False) I/O, not uint8")
        return "int16" if int8_io else "float32"
    return io_types[int8_io] if mode == "int8" else "float32"


def _activation_bits(model: keras.Model) -> dict[str, int]:
    """Bit width of each of kopt's activation fake-quants in ``model`` (a QAT model), by layer name."""
    from kopt.quantization.wrapper import ActivationQuantize

    return {
        layer.name: layer.quantizer.num_bits
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, ActivationQuantize)
    }


def qat_mode(model: keras.Model) -> str:
    """The ``mode`` a quantization-aware model lowers in: ``"int16x8"`` when it was trained with the
    ``"int16x8"`` scheme's 16-bit activation fake-quants, else ``"int8"``."""
    return "int16x8" if any(bits == 16 for bits in _activation_bits(model).values()) else "int8"


def _check_activation_bits(model: keras.Model, mode: str, representative_data: Any) -> None:
    """The activation fake-quants of a QAT model must match the mode: 8-bit for int8, 16-bit
    (the ``"int16x8"`` scheme) for 16x8, unless data calibrates a 16x8 model afresh."""
    bits = _activation_bits(model)
    if mode == "int8" and any(b == 16 for b in bits.values()):
        sixteen = sorted(name for name, b in bits.items() if b == 16)
        raise InvalidArgumentError(
            f"model '{model.name}' was trained with 16-bit activation fake-quants (the 'int16x8' scheme: "
            f"{sixteen[:3]}{'...' if len(sixteen) > 3 else ''}): lower it with mode='int16x8'"
        )
    if mode != "int16x8" or representative_data is not None:
        return
    if not bits:
        raise MissingRangesError(
            f"mode='int16x8' calibrates the int16 activation ranges of model '{model.name}' from data: pass "
            "representative_data=<input samples>, or train it with quantize_model(model, 'int16x8') first"
        )
    eight = sorted(name for name, b in bits.items() if b != 16)
    if eight:
        raise MissingRangesError(
            f"mode='int16x8' without representative_data needs 16-bit activation fake-quants, and model "
            f"'{model.name}' has {len(eight)} of another width ({eight[:3]}{'...' if len(eight) > 3 else ''}; "
            "it was quantized with an 8-bit scheme): quantize it with the 'int16x8' scheme, or pass "
            "representative_data to calibrate int16 ranges after training"
        )


def _model_inputs(model: keras.Model):
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    struct = getattr(model, "_inputs_struct", None)
    if struct is None:
        struct = inputs[0] if len(inputs) == 1 else list(inputs)
    return struct, keras.tree.flatten_with_path(struct)


def _unknown_inputs(model: keras.Model) -> list[InputSpec]:
    """Subclassed models expose no inputs: assume one float input whose shape the data gives."""
    shape = getattr(model, "_build_shapes_dict", None) or {}
    if len(shape) == 1:
        only = next(iter(shape.values()))
        if isinstance(only, (tuple, list)) and all(isinstance(d, (int, type(None))) for d in only):
            return [InputSpec("input_0", tuple(only[1:]), "float32")]
    return [InputSpec("input_0", None, "float32")]


def _input_signature(model: keras.Model, specs: list[InputSpec], batch_size: int | None) -> list:
    import tensorflow as tf

    tensor_specs = [tf.TensorSpec((batch_size,) + tuple(s.shape), s.dtype, name=s.key) for s in specs]
    inputs = _model_inputs(model)
    if inputs is None:
        return tensor_specs
    struct, _ = inputs
    return [keras.tree.pack_sequence_as(struct, tensor_specs)]


def _sanitize(name: str) -> str:
    """A TF-legal op name (TensorSpec names become SavedModel signature keys)."""
    clean = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)
    return clean if re.match(r"[A-Za-z0-9.]", clean) else f"input_{clean}"
