"""The technique protocol: one registered entry per technique (``prune``, ``cluster``, ``quantize``).

Policies, the staged pipeline and the sensitivity analysis iterate :func:`techniques` instead of
switching on names, so a technique is added in one place: a :class:`Technique` subclass in its own
package, registered with :func:`register_technique` when the package is imported. An entry owns

* its settings dataclass (``settings_type``, validated in its ``__post_init__``),
* which layers it can act on (:meth:`Technique.applies`) and which of their weights it changes
  (:meth:`Technique.weights`),
* the wrapped model for a stage from per-layer settings (:meth:`Technique.wrap`),
* the one-shot change the sensitivity analysis measures (:meth:`Technique.one_shot`), with its
  levels (``default_levels``, :meth:`Technique.level`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import keras
import numpy as np

from kopt.core.errors import InvalidArgumentError


class NotEligible(Exception):
    """Internal: the layer has nothing the technique can change (the message says why)."""


@dataclass(frozen=True)
class Target:
    """One weight a technique changes: a readable name, the variable, and technique details
    (the weight index for clustering's seed, the quantizer for quantization)."""

    name: str
    variable: keras.Variable
    index: int = 0
    quantizer: Any = None
    kernel_view: bool = False


def float_variable(variable: Any) -> bool:
    """Whether ``variable`` is a float Keras variable (the only kind a technique changes)."""
    return isinstance(variable, keras.Variable) and keras.backend.is_float_dtype(variable.dtype)


class Technique:
    """One technique, as every caller above the technique packages sees it."""

    #: The technique's name in policies, plans and stage lists.
    name: ClassVar[str]
    #: Where its stage runs among the others (pruning before clustering before QAT).
    order: ClassVar[int]
    #: Its per-layer settings, a frozen dataclass that validates itself.
    settings_type: ClassVar[type]
    #: Sensitivity levels when none are given, mildest first, and what a level means.
    default_levels: ClassVar[tuple[float | int, ...]]
    level_meaning: ClassVar[str]
    #: Whether mildest-first means descending values (cluster counts, bit widths).
    levels_descend: ClassVar[bool] = True
    #: Whether :meth:`wrap` reaches the sublayers of blocks kept whole (``per_layer`` keys ``"block/path"``,
    #: see :mod:`kopt.technique.inplace`); plans give such sublayers settings only for these techniques.
    wraps_in_place: ClassVar[bool] = False

    def applies(self, layer: keras.layers.Layer) -> bool:
        """Whether the technique can act on ``layer`` at all (a Flatten has nothing to prune)."""
        try:
            return bool(self.weights(layer))
        except NotEligible:
            return False

    def weights(self, layer: keras.layers.Layer) -> list[Target]:
        """The weights the technique changes in the built ``layer``; raises :class:`NotEligible`."""
        raise NotImplementedError

    def applies_in_place(self, layer: keras.layers.Layer) -> bool:
        """Whether :meth:`wrap` can act on ``layer`` as a sublayer of a block kept whole (only asked when
        :attr:`wraps_in_place`); by default as anywhere else."""
        return self.applies(layer)

    def on_by_default(self, layer: keras.layers.Layer) -> bool:
        """Whether a policy's global settings reach ``layer`` without a rule naming it or its class."""
        return True

    def trains(self, settings: Any) -> bool:
        """Whether these settings need a fine-tuning stage (post-training quantization does not)."""
        return True

    def wrap(self, model: keras.Model, per_layer: Mapping[str, Any], **context: Any) -> keras.Model:
        """``model`` with each layer named in ``per_layer`` wrapped for training with its settings."""
        raise NotImplementedError

    def level(self, value: Any) -> float | int | None:
        """``value`` as a plain Python level, or None when it is not a valid level."""
        raise NotImplementedError

    def level_applicable(self, level: float | int, values: Sequence[np.ndarray], preserve_sparsity: bool) -> bool:
        """Whether the pipeline could apply ``level`` to weights of these sizes."""
        return True

    def one_shot(
        self,
        layer: keras.layers.Layer,
        weights: Sequence[Target],
        values: Sequence[np.ndarray],
        level: float | int,
        *,
        seed: int = 0,
        preserve_sparsity: bool = False,
    ) -> list[np.ndarray]:
        """New values (NumPy, same shapes and dtypes) of ``weights`` at ``level``, as the stage would make them."""
        raise NotImplementedError


_REGISTRY: dict[str, Technique] = {}


def register_technique(technique: Technique) -> Technique:
    """Add ``technique`` to the registry (its package does this when imported)."""
    _REGISTRY[technique.name] = technique
    return technique


def techniques() -> tuple[Technique, ...]:
    """Every registered technique, in stage order."""
    return tuple(sorted(_REGISTRY.values(), key=lambda technique: technique.order))


def technique_names() -> tuple[str, ...]:
    return tuple(technique.name for technique in techniques())


def get_technique(name: Any) -> Technique:
    """The registered technique called ``name``; an :class:`InvalidArgumentError` lists the valid ones."""
    technique = _REGISTRY.get(name) if isinstance(name, str) else None
    if technique is None:
        raise InvalidArgumentError(f"Unknown technique {name!r}; valid techniques: {list(technique_names())}.")
    return technique


__all__ = [
    "NotEligible",
    "float_variable",
    "Target",
    "Technique",
    "get_technique",
    "register_technique",
    "technique_names",
    "techniques",
]
