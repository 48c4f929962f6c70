"""The protocol every kopt wrapper follows, so techniques stack and strip the same way.

A wrapper owns an inner Keras layer and computes it with some of the inner layer's
variables replaced by transformed tensors (a masked kernel, a clustered kernel, a
fake-quantized kernel). Subclasses say *which* weights and *how* in
:meth:`KoptWrapper.transformed_weights`; calling, stripping and serialization are shared.
"""

from __future__ import annotations

from typing import Any

import keras

from kopt.core.substitution import call_with_weights
from kopt.graph.rebuild import clone_layer


class KoptWrapper(keras.layers.Wrapper):
    """Base class of kopt's layer wrappers (pruning, clustering, quantization)."""

    #: The technique the wrapper applies (``"prune"``, ``"cluster"``, ``"quantize"``).
    technique: str | None = None
    #: Layers kopt inserts (wrappers, activation fake-quants): not the user's own kernels.
    kopt_internal = True
    #: Whether :meth:`strip` keeps the wrapper (a copy): quantization's fake-quant ops are what the int8
    #: converter reads its parameters from. A block holding such a wrapper in place is kept wrapped too.
    kept_by_strip = False

    def reached_variables(self) -> list[keras.Variable]:
        """The inner variables the technique acts on (what :mod:`kopt.coverage` counts as reached)."""
        return []

    def transformed_weights(self, training: bool = False) -> list[tuple[keras.Variable, Any]]:
        """Pairs ``(inner variable, tensor to use instead)``; empty means "run the layer as is"."""
        return []

    def call(self, inputs: Any, training: bool | None = None, **kwargs: Any) -> Any:
        substitutions = self.transformed_weights(training=bool(training))
        if training is not None:
            kwargs["training"] = training
        return call_with_weights(self.layer, substitutions, inputs, **kwargs)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def compute_output_spec(
        self, inputs: Any, *args: Any, training: bool | None = None, mask: Any = None, **kwargs: Any
    ) -> Any:
        """The inner layer's output spec: also right for custom layers without ``compute_output_shape``
        (Keras then traces the inner ``call``). ``training`` never changes the output's shape or
        dtype and is dropped; ``mask`` is passed only to layers whose ``call`` takes one."""
        if mask is not None and getattr(self.layer, "_call_has_mask_arg", False):
            kwargs["mask"] = mask
        return self.layer.compute_output_spec(inputs, *args, **kwargs)

    def strip(self) -> keras.layers.Layer:
        """A plain copy of the inner layer holding the weights this wrapper deploys."""
        plain = clone_layer(self.layer)
        final = {id(variable): value for variable, value in self.transformed_weights(training=False)}
        for copy_variable, inner_variable in zip(plain.weights, self.layer.weights):
            if id(inner_variable) in final:
                copy_variable.assign(final[id(inner_variable)])
        return plain
