"""Optimum's merged decoder (``decoder_model_merged.onnx``) built from a flat cached export.

The layout (optimum ``merge_decoders``; every transformers.js LLM ships it): one top-level ``If``
on a bool graph input ``use_cache_branch`` of shape (1,); its then-branch is the decoder with
past, its else-branch the decoder without; the weights stay outer-graph initializers that both
branches read by name. Here both branches are copies of the cached graph (the else-branch is
then driven with an empty past too, which is what the no-past decoder computes); a branch's
names get ``prefix`` (optimum keeps the exporter's names: ``then_prefix=""``, and the branch's
outputs then carry the If's output names). ``own`` moves outer initializers into the branches
(each branch its copy, under the branch's prefix): a branch holding initializers of its own.
"""
from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import TensorProto, helper

CONDITION = "use_cache_branch"


def _branch(graph: onnx.GraphProto, prefix: str, own: set[str]) -> onnx.GraphProto:
    rename = {name: prefix + name for node in graph.node for name in node.output if name}
    rename.update({name: prefix + name for name in own})
    nodes = []
    for node in graph.node:
        moved = copy.deepcopy(node)
        moved.input[:] = [rename.get(name, name) for name in moved.input]
        moved.output[:] = [rename.get(name, name) for name in moved.output]
        moved.name = prefix + moved.name
        nodes.append(moved)
    outputs = []
    for value in graph.output:
        moved = copy.deepcopy(value)
        moved.name = rename.get(value.name, value.name)
        outputs.append(moved)
    initializers = []
    for tensor in graph.initializer:
        if tensor.name in own:
            moved = copy.deepcopy(tensor)
            moved.name = rename[tensor.name]
            initializers.append(moved)
    return helper.make_graph(nodes, f"{prefix or 'with_past'}branch", [], outputs, initializers)


def merge(cached: onnx.ModelProto, then_prefix: str = "with_past/", else_prefix: str = "no_past/",
          own: tuple[str, ...] = ()) -> onnx.ModelProto:
    """The merged decoder of the flat cached export ``cached`` (see the module docstring)."""
    graph = cached.graph
    moved = set(own)
    then_branch = _branch(graph, then_prefix, moved)
    else_branch = _branch(graph, else_prefix, moved)
    condition = helper.make_tensor_value_info(CONDITION, TensorProto.BOOL, [1])
    node = helper.make_node("If", [CONDITION], [value.name for value in graph.output], name="optimum::if",
                            then_branch=then_branch, else_branch=else_branch)
    outer = helper.make_graph([node], "merged", [*graph.input, condition], list(graph.output),
                              [tensor for tensor in graph.initializer if tensor.name not in moved])
    merged = helper.make_model(outer, opset_imports=cached.opset_import, ir_version=cached.ir_version)
    return merged


def seq2seq(layers: int = 2, hidden: int = 16, vocab: int = 32, seed: int = 0) -> onnx.ModelProto:
    """An encoder-decoder's merged decoder as optimum-onnx 0.1.0's exporter writes it for T5
    (``text2text-generation-with-past``: ``merge_decoders(..., strict=False)``), built by hand.

    Inputs as the real file's: ``encoder_attention_mask``, ``input_ids``, ``encoder_hidden_states``
    (batch, encoder_sequence_length, hidden), ``past_key_values.N.encoder.key/value`` (batch, heads,
    encoder_sequence_length, head_dim: the past's length axis is *shared* with the encoder's
    states), ``use_cache_branch``. The no-past (else) branch computes each layer's cross-attention
    keys/values from ``encoder_hidden_states`` and returns them as ``present.N.encoder.*``; the
    with-past (then) branch never reads ``encoder_hidden_states``: its cross-attention reads the
    keys/values from the past inputs, and its ``present.N.encoder.*`` are empty Constants (shape
    (0, heads, 1, head_dim): the padding ``strict=False`` adds). So with any past the probe can
    give, the with-past branch is not the first step. Each layer: ``h += cross_attention(h)``
    (one head, the mask ignored), ``h += relu(h W1) W2``; ``logits = h W_lm``.
    """
    rng = np.random.default_rng(seed)
    weights: list[onnx.TensorProto] = []

    def weight(name: str, *shape: int) -> str:
        weights.append(helper.make_tensor(name, TensorProto.FLOAT, shape,
                                          (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32).ravel()))
        return name

    embed = weight("shared.weight", vocab, hidden)
    head = weight("lm_head.weight", hidden, vocab)
    layer_weights = [{key: weight(f"decoder.block.{i}.{key}", hidden, hidden) for key in ("q", "k", "v", "o", "wi", "wo")}
                     for i in range(layers)]

    def branch(with_past: bool) -> onnx.GraphProto:
        nodes = [helper.make_node("Gather", [embed, "input_ids"], ["/decoder/embed_tokens/Gather_output_0"])]
        h = "/decoder/embed_tokens/Gather_output_0"
        outputs = []
        axes = helper.make_tensor("/decoder/axes", TensorProto.INT64, [1], [1])
        nodes.append(helper.make_node("Constant", [], ["/decoder/axes_output_0"], value=axes))
        for i, w in enumerate(layer_weights):
            p = f"/decoder/block.{i}"
            if with_past:
                key, value = f"{p}/k_past", f"{p}/v_past"
                nodes += [helper.make_node("Squeeze", [f"past_key_values.{i}.encoder.key", "/decoder/axes_output_0"], [key]),
                          helper.make_node("Squeeze", [f"past_key_values.{i}.encoder.value", "/decoder/axes_output_0"],
                                           [value])]
                for kind in ("key", "value"):
                    empty = helper.make_tensor(f"{p}/empty_{kind}", TensorProto.FLOAT, [0, 1, 1, hidden], [])
                    nodes.append(helper.make_node("Constant", [], [f"present.{i}.encoder.{kind}"], value=empty))
            else:
                key, value = f"{p}/k", f"{p}/v"
                nodes += [helper.make_node("MatMul", ["encoder_hidden_states", w["k"]], [key]),
                          helper.make_node("MatMul", ["encoder_hidden_states", w["v"]], [value]),
                          helper.make_node("Unsqueeze", [key, "/decoder/axes_output_0"], [f"present.{i}.encoder.key"]),
                          helper.make_node("Unsqueeze", [value, "/decoder/axes_output_0"],
                                           [f"present.{i}.encoder.value"])]
            nodes += [helper.make_node("MatMul", [h, w["q"]], [f"{p}/q"]),
                      helper.make_node("Transpose", [key], [f"{p}/kt"], perm=[0, 2, 1]),
                      helper.make_node("MatMul", [f"{p}/q", f"{p}/kt"], [f"{p}/scores"]),
                      helper.make_node("Softmax", [f"{p}/scores"], [f"{p}/probs"], axis=-1),
                      helper.make_node("MatMul", [f"{p}/probs", value], [f"{p}/context"]),
                      helper.make_node("MatMul", [f"{p}/context", w["o"]], [f"{p}/attention"]),
                      helper.make_node("Add", [h, f"{p}/attention"], [f"{p}/layer.1/Add_output_0"]),
                      helper.make_node("MatMul", [f"{p}/layer.1/Add_output_0", w["wi"]], [f"{p}/wi"]),
                      helper.make_node("Relu", [f"{p}/wi"], [f"{p}/relu"]),
                      helper.make_node("MatMul", [f"{p}/relu", w["wo"]], [f"{p}/mlp"]),
                      helper.make_node("Add", [f"{p}/layer.1/Add_output_0", f"{p}/mlp"], [f"{p}/layer.2/Add_output_0"])]
            h = f"{p}/layer.2/Add_output_0"
            outputs += [helper.make_tensor_value_info(f"present.{i}.encoder.{kind}", TensorProto.FLOAT, [None] * 4)
                        for kind in ("key", "value")]
        nodes.append(helper.make_node("MatMul", [h, head], ["logits"]))
        logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, None, vocab])
        return helper.make_graph(nodes, "with_past" if with_past else "no_past", [], [logits, *outputs])

    then_branch, else_branch = branch(True), branch(False)
    batch, source = "batch_size", "encoder_sequence_length"
    inputs = [helper.make_tensor_value_info("encoder_attention_mask", TensorProto.INT64, [batch, source]),
              helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, "decoder_sequence_length"]),
              helper.make_tensor_value_info("encoder_hidden_states", TensorProto.FLOAT, [batch, source, hidden])]
    inputs += [helper.make_tensor_value_info(f"past_key_values.{i}.encoder.{kind}", TensorProto.FLOAT,
                                             [batch, 1, source, hidden]) for i in range(layers) for kind in ("key", "value")]
    inputs.append(helper.make_tensor_value_info(CONDITION, TensorProto.BOOL, [1]))
    outputs = list(else_branch.output)
    node = helper.make_node("If", [CONDITION], [value.name for value in outputs], name="optimum::if",
                            then_branch=then_branch, else_branch=else_branch)
    graph = helper.make_graph([node], "merged", inputs, outputs, weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
