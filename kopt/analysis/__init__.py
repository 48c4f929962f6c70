"""Analyses that guide optimization before any fine-tuning is spent.

:func:`sensitivity` measures, for each layer alone, the accuracy lost at each level of a
technique (pruning sparsity, cluster count, weight bit width), one-shot. The resulting
:class:`SensitivityTable` ranks the layers, says how far each can go within an accuracy
budget (:meth:`SensitivityTable.levels_within`) and turns that into a per-layer
:class:`kopt.Policy` (:meth:`SensitivityTable.to_policy`)::

    table = kopt.analysis.sensitivity(model, (x_val, y_val), technique="prune")
    print(table)                      # Markdown: drop in points per layer and sparsity
    policy = table.to_policy(0.01)    # each layer at its sparsity costing <= 1 point
    kopt.optimize(model, policy, train_data=(x_train, y_train))
"""

from kopt.analysis.sensitivity import sensitivity
from kopt.analysis.table import LayerSensitivity, SensitivityTable
from kopt.analysis.techniques import DEFAULT_LEVELS, TECHNIQUES, transformed_weights

__all__ = ["DEFAULT_LEVELS", "LayerSensitivity", "SensitivityTable", "TECHNIQUES", "sensitivity", "transformed_weights"]
