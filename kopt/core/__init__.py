"""The floor every technique stands on. ``kopt.core.layers``: the layer-layout table."""

from kopt.core.layers import Kernel, LayerLayout, layout_of, register_layer, unregister_layer

__all__ = ["Kernel", "LayerLayout", "layout_of", "register_layer", "unregister_layer"]
