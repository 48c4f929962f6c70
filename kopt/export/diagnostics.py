"""Explain lowering failures in Keras terms: which op, which layer, what to do.

The TF converter names ops by their TensorFlow scope (``functional_1/my_layer_1/erfinv/Erfinv``),
and TFLite tensors carry the same scopes. Keras puts each layer's ops under the layer's name
(with a ``_N`` suffix TF adds to make scopes unique), so matching scope components against
the model's layer names recovers the layer at fault.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from kopt.core.errors import ConversionError, NotFullyIntegerError
from kopt.export.flatbuffer import TFLiteSource, load

_FLOAT_DTYPES = ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")


def layer_names(model: Any) -> dict[str, str]:
    """Layer name -> class name for every layer of ``model``, nested models included."""
    found = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        found[layer.name] = type(layer).__name__
    return found


def layer_for(scope: str, names: Iterable[str]) -> str | None:
    """The deepest Keras layer named in a TF scope / TFLite tensor name (first ';' part that has one)."""
    names = set(names)
    best = None
    for part in scope.split(";"):
        for component in part.split("@")[0].split("/"):
            if component in names:
                best = component
                continue
            stripped = re.sub(r"_\d+$", "", component)
            if stripped in names:
                best = stripped
        if best is not None:
            return best
    return best


def conversion_error(error: Exception, names: dict[str, str]) -> ConversionError:
    """A :class:`ConversionError` naming the op and layer from a TF converter exception."""
    op = scope = detail = None
    for item in getattr(error, "errors", None) or []:
        op = getattr(getattr(item, "operator", None), "name", None) or op
        calls = [c.name for c in getattr(getattr(item, "location", None), "call", [])]
        calls += [getattr(getattr(item, "location", None), "name", "")]
        scope = next((c for c in calls if c and "/" in c), scope)
        detail = (getattr(item, "error_message", "") or "").splitlines()[0] if not detail else detail
        if op:
            break
    text = str(error)
    if op is None:
        match = re.search(r"'(tf\.[\w.]+|tfl\.[\w.]+)' op", text)
        op = match.group(1) if match else None
    if scope is None:
        match = re.search(r'fused\["[^"]*", "([^"]+)"\]', text)
        scope = match.group(1) if match else None
    if detail is None:
        lines = text.splitlines()
        detail = next((line.strip() for line in lines if "error:" in line), lines[0] if lines else "")
        detail = detail.split("error:", 1)[-1].strip()
    layer = layer_for(scope, names) if scope else None
    where = []
    if op:
        where.append(f"op '{op}'")
    if layer:
        where.append(f"layer '{layer}' ({names.get(layer, '?')})")
    advice = ""
    if "neither a custom op nor a flex op" in text or "ERROR_NEEDS" in text:
        advice = " TFLite's builtin op set has no kernel for this op: replace the layer with ops TFLite supports."
    message = f"TFLite conversion failed{' at ' + ' in '.join(where) if where else ''}: {detail}.{advice}"
    return ConversionError(message, op=op, layer=layer)


def float_ops(tflite: TFLiteSource) -> list[tuple[int, str, str]]:
    """Ops of a supposedly full-integer model that compute in float: ``(index, op, tensor names)``.

    QUANTIZE / DEQUANTIZE ops at the model's inputs or outputs (float I/O) are allowed. The
    names are the op's output then input tensor names, ';'-joined: the converter names its own
    QUANTIZE/DEQUANTIZE outputs ``tfl.quantize``, so the layer often shows only on a neighbour.
    """
    sg = load(tflite).main
    io = set(sg.inputs) | set(sg.outputs)
    found = []
    for op in sg.operators:
        touched = [i for i in op.inputs + op.outputs if i >= 0]
        if op.name in ("QUANTIZE", "DEQUANTIZE") and io.intersection(touched):
            continue
        is_float = any(sg.tensors[i].dtype in _FLOAT_DTYPES for i in touched)
        if is_float or op.name == "DEQUANTIZE":
            names = [sg.tensors[i].name for i in list(op.outputs) + [i for i in op.inputs if i >= 0]]
            found.append((op.index, op.label, ";".join(names)))
    return found


def require_full_integer(tflite: bytes, names: dict[str, str], *, calibrated: bool) -> None:
    """Raise :class:`NotFullyIntegerError` if ``tflite`` still computes anything in float."""
    bad = float_ops(tflite)
    if not bad:
        return
    listed = []
    for index, op, tensor in bad[:8]:
        layer = layer_for(tensor, names)
        listed.append(f"#{index} {op} (layer '{layer}')" if layer else f"#{index} {op} ('{tensor.split(';')[0]}')")
    more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
    if calibrated:
        hint = (
            "TFLite has no int8 kernel for these ops (e.g. keras.ops.normalize / UnitNormalization leave "
            "a float SQUARE/RSQRT island): replace those layers"
        )
    else:
        hint = (
            "The model's fake-quant ops do not cover these tensors (a layer without fake-quant, e.g. an Add "
            "without an output quantizer): quantize those layers too, or pass representative_data to "
            "calibrate the missing ranges"
        )
    message = (
        f"the converted model is not fully int8: {len(bad)} op(s) compute in float: "
        f"{', '.join(listed)}{more}. {hint}."
    )
    first_layer = layer_for(bad[0][2], names)
    raise NotFullyIntegerError(message, float_ops=bad, op=bad[0][1], layer=first_layer)
