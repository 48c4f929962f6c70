"""Run a Keras layer with some of its variables replaced by computed tensors.

Keras 3 kernels are read-only (``Dense.kernel`` is a property), so the TFMOT trick of
assigning a masked / clustered / fake-quantized tensor to ``layer.kernel`` cannot work.
Instead every kopt wrapper calls its inner layer inside a :class:`keras.StatelessScope`
that maps the original variable to the transformed tensor. The transformed tensor is
computed from trainable variables with ``keras.ops``, so gradients reach them on every
backend.

The subtle part is nesting: the JAX trainer already runs the whole model inside a
stateless scope whose mapping holds the traced values of *all* variables. A fresh inner
scope would hide that mapping (variables it does not list would read their stale
concrete value, cutting gradients), and it would swallow state updates made by the
inner layer (e.g. a seed generator). :func:`call_with_weights` therefore inherits the
outer mapping and hands every update back to the outer scope, or assigns it when there
is no outer scope.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras

from kopt.core.keras_compat import get_stateless_scope


def call_with_weights(
    layer: keras.layers.Layer,
    substitutions: Sequence[tuple[keras.Variable, Any]] | Mapping[keras.Variable, Any],
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Call ``layer(*args, **kwargs)`` with each variable in ``substitutions`` replaced.

    ``substitutions`` pairs variables of ``layer`` with tensors of the same shape. Other
    variables keep their current value (the outer stateless scope's, under JAX).
    """
    pairs = list(substitutions.items()) if isinstance(substitutions, Mapping) else list(substitutions)
    substituted_ids = {id(variable) for variable, _ in pairs}
    outer = get_stateless_scope()

    scope = keras.StatelessScope(
        state_mapping=pairs,
        collect_losses=outer.collect_losses if outer is not None else False,
        initialize_variables=outer.initialize_variables if outer is not None else True,
    )
    if outer is not None:
        inherited = {k: v for k, v in outer.state_mapping.items() if k not in substituted_ids}
        scope.state_mapping = {**inherited, **scope.state_mapping}
    entry_values = dict(scope.state_mapping)

    with scope:
        outputs = layer(*args, **kwargs)

    for loss in scope.losses:
        if outer is not None and outer.collect_losses:
            outer.add_loss(loss)
    for variable in layer.variables:
        key = id(variable)
        if key in substituted_ids or key not in scope.state_mapping:
            continue
        new_value = scope.state_mapping[key]
        if entry_values.get(key) is new_value:
            continue
        if outer is not None:
            outer.add_update((variable, new_value))
        else:
            variable.assign(new_value)
    return outputs
