"""``quantize_model``, ``quantize_annotate_*``, ``quantize_apply`` with TFMOT's arguments, on
``kopt.quantization``. Schemes are TFMOT's scheme objects or kopt scheme names."""

from __future__ import annotations

from typing import Any

import keras

from kopt.core.errors import InvalidArgumentError
from kopt.graph import map_layers
from kopt.graph.model_type import like_input
from kopt.quantization import QuantizeAnnotate, QuantizeWrapper, Scheme
from kopt.quantization import QuantizeConfig as KoptQuantizeConfig
from kopt.quantization import quantize_apply as kopt_quantize_apply
from kopt.tfmot._common import keep_input_shape, model_kind, scope
from kopt.tfmot.quantization.keras.quantize_config import QuantizeConfig, TfmotConfig


class QuantizeScheme:
    """A TFMOT scheme object; :meth:`kopt_scheme` names the kopt scheme it runs."""

    def kopt_scheme(self) -> str | Scheme:
        raise NotImplementedError


def quantize_scope(*args: dict) -> keras.saving.CustomObjectScope:
    """A scope holding the user's custom objects (custom layers, configs, quantizers) for loading.

    kopt's own objects load without it; models holding user classes still need them.
    """
    return scope(*args)


def _model_or_raise(model: Any, api: str, name: str) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise InvalidArgumentError(
            f"`{name}` can only either be a keras Sequential or Functional model; got {type(model).__name__}."
        )
    model_kind(model, api)
    return model


def _scheme(scheme: Any) -> str | Scheme:
    if scheme is None:
        return "default_8bit"
    if isinstance(scheme, QuantizeScheme):
        return scheme.kopt_scheme()
    if isinstance(scheme, (str, Scheme)):
        return scheme
    raise InvalidArgumentError(
        f"quantize_apply: scheme must be a tfmot scheme object (e.g. "
        f"tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()), a kopt Scheme or a scheme name; "
        f"got {scheme!r}."
    )


def quantize_model(to_quantize: keras.Model, quantized_layer_name_prefix: str | None = None) -> keras.Model:
    """A quantization-aware copy of the whole model (TFLite int8 scheme). A Sequential stays Sequential."""
    _model_or_raise(to_quantize, "quantize_model", "to_quantize")
    _check_prefix(quantized_layer_name_prefix)
    return kopt_quantize_apply(quantize_annotate_model(to_quantize), "default_8bit")


def quantize_annotate_layer(to_annotate: keras.layers.Layer, quantize_config: Any = None) -> QuantizeAnnotate:
    """Mark one layer for ``quantize_apply``, optionally with a TFMOT or kopt ``QuantizeConfig``."""
    if not isinstance(to_annotate, keras.layers.Layer) or isinstance(to_annotate, keras.Model):
        raise InvalidArgumentError(
            f"`to_annotate` can only be a keras Layer instance; got {type(to_annotate).__name__}."
        )
    if quantize_config is not None and not isinstance(quantize_config, KoptQuantizeConfig):
        if not isinstance(quantize_config, QuantizeConfig):
            raise InvalidArgumentError(
                f"`quantize_config` can only be a tfmot.quantization.keras.QuantizeConfig instance; "
                f"got {type(quantize_config).__name__}."
            )
        quantize_config = TfmotConfig(quantize_config)
    return keep_input_shape(QuantizeAnnotate(to_annotate, quantize_config), to_annotate)


def quantize_annotate_model(to_annotate: keras.Model) -> keras.Model:
    """Mark every layer of a model for ``quantize_apply`` (layers annotated already keep their config)."""
    _model_or_raise(to_annotate, "quantize_annotate_model", "to_annotate")

    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if isinstance(layer, (QuantizeAnnotate, QuantizeWrapper, keras.layers.InputLayer)):
            return None
        return QuantizeAnnotate(layer)

    # As in TFMOT, the annotations wrap the model's own layers (no copy: a custom layer class need not be
    # registered yet); quantize_apply copies every layer, so the user's model is never trained through them.
    annotated = map_layers(to_annotate, annotate, clone=False)
    return like_input(to_annotate, annotated, "quantize_annotate_model")


def quantize_apply(
    model: keras.Model, scheme: Any = None, quantized_layer_name_prefix: str | None = None
) -> keras.Model:
    """Quantize the annotated layers of ``model`` with ``scheme`` (default: TFLite int8).

    ``scheme`` may be ``tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()``,
    ``Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=...)``,
    ``tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()`` or a kopt scheme.
    """
    _model_or_raise(model, "quantize_apply", "model")
    _check_prefix(quantized_layer_name_prefix)
    return kopt_quantize_apply(model, _scheme(scheme))


def _check_prefix(prefix: str | None) -> None:
    if prefix not in (None, "quant_"):
        raise InvalidArgumentError(
            f"quantized_layer_name_prefix={prefix!r} is not supported: kopt names quantized layers 'quant_<name>'."
        )
