"""Every private Keras API kopt uses, in one place.

Keras 3 has no public name for these, and kopt needs them: the raw ``keras.ops`` operation
classes that appear as nodes of a Functional graph (to match and quantize ``x + y`` written with
``keras.ops``), the names of keras.applications' own custom layers (to open them), the ``Functional``
class (to tell a graph model from a subclassed one) and the JAX trainer's stateless scope (to
substitute variables inside it). When a Keras release moves one of
them, this module is the only one to change.
"""

from __future__ import annotations

from keras.src.backend.common.stateless_scope import get_stateless_scope
from keras.src.models.functional import Functional
from keras.src.ops import core as ops_core
from keras.src.ops import image as ops_image
from keras.src.ops import math as ops_math
from keras.src.ops import nn as ops_nn
from keras.src.ops import numpy as ops_numpy

#: ``module.QualName`` of keras.applications' own custom layers whose call is ``keras.ops`` on their inputs (and a
#: weight): InceptionResNetV2's residual scaling and ConvNeXt's per-channel layer scale. Named, not imported:
#: importing the applications' modules would load them all.
APPLICATION_OPS_LAYERS = frozenset({
    "keras.src.applications.inception_resnet_v2.CustomScaleLayer",
    "keras.src.applications.convnext.LayerScale",
})

__all__ = [
    "APPLICATION_OPS_LAYERS", "Functional", "get_stateless_scope", "ops_core", "ops_image", "ops_math", "ops_nn",
    "ops_numpy",
]
