"""Attention-mix healing: ``y ≈ x·T₁ + (P̄x)·T₂ + b``, with P̄ the upstream layer's attention.

A per-token map cannot move information between tokens, and moving it is half of what an
encoder layer does. The attention pattern of the layer just before the span is already computed
(and attention patterns of neighbouring layers are alike), so its head-averaged probabilities
P̄ (B, S, S) give each token a context vector ``P̄x`` for free; the map is then fitted on the
features ``[x, P̄x]`` by the same ridge regression as ``--heal linear``, shrunk toward
``[I; 0]`` (plain removal). Nothing of the removed layer is kept; the model gains 2·D² + D
parameters per span instead of D² + D. Measured on MiniLM-L6 (docs/prune.md): layers (0, 2)
removed, 0.8996 → 0.9056 mean embedding cosine (layer 2 alone 0.9517 → 0.9554); the first
layer has no attention upstream and gets the plain map.

This module finds the pattern (:func:`upstream_attention`: the last Softmax of rank 4 the entry
depends on), computes the features as the graph will (:func:`mix_features`, float32 like the
model) and builds the nodes (:func:`mix_nodes`).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from redaudit.core.graph import GraphIndex
from redaudit.core.tensor_types import TensorType
from redaudit.prune.errors import PruneError

_UNKNOWN = TensorType(0, None)


def upstream_attention(model: onnx.ModelProto, entry: str) -> str | None:
    """The output of the last (in graph order) rank-4 Softmax that ``entry`` depends on — the
    attention probabilities (B, H, S, S) of the layer just before it — or None (no attention
    upstream: the first layer of an encoder, a CNN)."""
    index = GraphIndex.build(model)
    found = [position for position in index.ancestors(entry) if index.nodes[position].op_type == "Softmax"
             and len(index.types.get(index.nodes[position].output[0], _UNKNOWN).shape or ()) == 4]
    return index.nodes[max(found)].output[0] if found else None


def removal_prior(d_in: int, d_out: int) -> np.ndarray:
    """``[I; 0]``: the map that passes x through and ignores ``P̄x`` — plain removal, which the
    ridge penalty shrinks a mixing map toward."""
    return np.vstack([np.eye(d_out), np.zeros((d_in - d_out, d_out))])


def mix_features(attention: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``[x, P̄x]`` on the last axis: P̄ = attention averaged over heads (axis 1)."""
    if attention.ndim != 4 or x.ndim != 3 or attention.shape[0] != x.shape[0] \
            or attention.shape[2:] != (x.shape[1], x.shape[1]):
        raise PruneError(f"attention {attention.shape} does not mix the tokens of {x.shape}: "
                         "expected (batch, heads, seq, seq) for (batch, seq, features); use --heal linear")
    averaged = attention.mean(axis=1, dtype=np.float32).astype(x.dtype, copy=False)
    return np.concatenate([x, np.matmul(averaged, x)], axis=-1)


def mix_nodes(opset: int, entry: str, attention: str, exit_name: str, weight_x: str, weight_mix: str,
              bias: str, fresh) -> list[onnx.NodeProto]:
    """Nodes computing ``exit = entry·Wx + (mean_heads(attention)·entry)·Wmix + bias``; ``fresh``
    makes unique tensor names; ``opset`` decides how ReduceMean takes its axes."""
    averaged, context, left, right, total = (fresh(f"{exit_name}/heal_{part}") for part in
                                             ("attention_mean", "context", "matmul", "mix_matmul", "sum"))
    if opset >= 18:
        axes = fresh(f"{exit_name}/heal_axes")
        nodes = [helper.make_node("Constant", [], [axes], name=f"{exit_name}/heal_axes",
                                  value=helper.make_tensor(axes, onnx.TensorProto.INT64, [1], [1])),
                 helper.make_node("ReduceMean", [attention, axes], [averaged], keepdims=0,
                                  name=f"{exit_name}/heal_attention_mean")]
    else:
        nodes = [helper.make_node("ReduceMean", [attention], [averaged], axes=[1], keepdims=0,
                                  name=f"{exit_name}/heal_attention_mean")]
    return nodes + [
        helper.make_node("MatMul", [averaged, entry], [context], name=f"{exit_name}/heal_context"),
        helper.make_node("MatMul", [entry, weight_x], [left], name=f"{exit_name}/heal_matmul"),
        helper.make_node("MatMul", [context, weight_mix], [right], name=f"{exit_name}/heal_mix_matmul"),
        helper.make_node("Add", [left, right], [total], name=f"{exit_name}/heal_sum"),
        helper.make_node("Add", [total, bias], [exit_name], name=f"{exit_name}/heal_add"),
    ]
