"""Openers: calls written again for layers whose own ``call`` does not trace into quantizable ops.

* keras-hub embeddings read the batch size (``ops.tile(token, (batch, 1, 1))``), which is
  ``None`` when tracing: they are rebuilt from the layer's sublayers, ``keras.ops`` and
  :class:`~kopt.graph.parameter.Parameter` copies of its weights (class / distillation tokens
  repeated per sample, position embeddings as one tensor).
* ``MultiHeadAttention`` would trace into one fused ``dot_product_attention`` op; its explicit
  path (einsum, scale, softmax, einsum) gives every intermediate its own int8 range.

They compute what the layer computes; keras-hub itself is not imported here.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from kopt.graph.composite import CannotOpen, register_opener
from kopt.graph.parameter import Constant, Parameter


def _patches(layer: keras.layers.Layer, name: str, inputs: Any) -> Any:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise CannotOpen("only channels_last patch embeddings are opened")
    patches = layer.patch_embedding(inputs)
    return keras.layers.Reshape((-1, patches.shape[-1]), name=f"{name}_flatten")(patches)


def _token(layer: keras.layers.Layer, attribute: str, name: str, anchor: Any) -> Any:
    return Parameter.holding(getattr(layer, attribute), name=f"{name}_{attribute}", per_sample=True)(anchor)


@register_opener("keras_hub.src.models.vit.vit_layers.ViTPatchingAndEmbedding")
def open_vit_embedding(layer: keras.layers.Layer, name: str, inputs: Any) -> Any:
    embeddings = _patches(layer, name, inputs)
    if layer.use_class_token:
        embeddings = ops.concatenate([_token(layer, "class_token", name, inputs), embeddings], axis=1)
    rows = layer.position_embedding(layer.position_ids)
    position = Parameter.holding(rows, name=f"{name}_position_embedding")(inputs)
    return ops.add(embeddings, position)


@register_opener("keras_hub.src.models.deit.deit_layers.DeiTEmbeddings")
def open_deit_embedding(layer: keras.layers.Layer, name: str, inputs: Any, bool_masked_pos: Any = None) -> Any:
    if bool_masked_pos is not None:
        raise CannotOpen("masked patches (bool_masked_pos) are not opened")
    embeddings = _patches(layer, name, inputs)
    tokens = [_token(layer, "class_token", name, inputs), _token(layer, "distillation_token", name, inputs)]
    embeddings = ops.concatenate([*tokens, embeddings], axis=1)
    position = Parameter.holding(layer.position_embedding, name=f"{name}_position_embedding")(inputs)
    return layer.dropout(ops.add(embeddings, position))


@register_opener(keras.layers.MultiHeadAttention)
def open_multi_head_attention(layer: keras.layers.Layer, name: str, *args: Any, **kwargs: Any) -> Any:
    wanted = bool(kwargs.get("return_attention_scores", False))
    kwargs["return_attention_scores"] = True  # the explicit path: no fused dot_product_attention op
    outputs, scores = layer.call(*args, **kwargs)
    return (outputs, scores) if wanted else outputs


@register_opener("keras_hub.src.models.deit.deit_layers.DeiTEncoder")
def open_deit_encoder(
    layer: keras.layers.Layer,
    name: str,
    hidden_states: Any,
    attention_masks: Any = None,
    output_hidden_states: bool = False,
    return_attention_scores: bool = False,
) -> Any:
    # Its blocks return (tensor, None): a symbolic call of a block cannot, so each block's call is traced.
    if attention_masks is not None or output_hidden_states or return_attention_scores:
        raise CannotOpen("attention masks, hidden states and attention scores outputs are not opened")
    x = hidden_states
    for block in layer.encoder_layers:  # one sub-model per block: blocks name their sublayers alike
        block_input = keras.Input(batch_shape=tuple(x.shape), dtype=x.dtype)
        x = keras.Model(block_input, block.call(block_input)[0], name=f"{name}_{block.name}")(x)
    x = layer.layer_norm(x)
    seq_len, hidden_dim = hidden_states.shape[1], hidden_states.shape[2]
    empty_states = Constant(np.zeros((0, seq_len, hidden_dim), "float32"), name=f"{name}_no_hidden_states")(x)
    empty_scores = Constant(
        np.zeros((0, layer.num_heads, seq_len, seq_len), "float32"), name=f"{name}_no_attention_scores"
    )(x)
    return x, empty_states, empty_scores
