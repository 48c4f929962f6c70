"""``kopt.register_layer``: one call that teaches every technique a custom layer type."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from kopt.core.layers import Kernel, LayerLayout
from kopt.core.layers import register_layer as _register_layout


def register_layer(
    layer_class: type,
    kernels: Mapping[str, Kernel | int | Sequence[int] | None] | Sequence[Kernel],
    *,
    quantize_config: Any = None,
    foldable: bool = False,
    prunable: bool = True,
    clusterable: bool = True,
    prune_by_default: bool = True,
) -> LayerLayout:
    """Make ``layer_class`` (and its subclasses) prunable, clusterable and, with ``quantize_config``, quantizable.

    ``kernels`` names the weights, e.g. ``{"kernel": kopt.Kernel("kernel", channel_axes=-1, input_axis=0)}``
    (``input_axis``: the input-channel axis M:N sparsity runs along; ``channel_axes``: the output
    channel of per-channel clustering and quantization). ``quantize_config`` is the
    :class:`kopt.quantization.QuantizeConfig` (or a factory ``layer -> QuantizeConfig``) every
    quantization scheme uses for the class. Returns the table row.
    """
    layout = _register_layout(
        layer_class, kernels, foldable=foldable, prunable=prunable, clusterable=clusterable,
        prune_by_default=prune_by_default,
    )
    if quantize_config is not None:
        from kopt.quantization import register

        register(layer_class, quantize_config)
    return layout


__all__ = ["Kernel", "register_layer"]
