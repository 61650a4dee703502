"""Small ONNX models built in code, with structure (and so answers) known in advance."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def make_model(nodes, inputs, outputs, initializers, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="redaudit-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def residual_cnn(blocks: int = 3, channels: int = 8, size: int = 8, seed: int = 0,
                 duplicate_block: int | None = None, zero_branch: int | None = None,
                 batch: int | str = "N") -> onnx.ModelProto:
    """Conv stem → `blocks` residual blocks (Conv-Relu-Conv + skip, Relu) → GAP → Gemm(10).

    ``duplicate_block=k`` inserts an exact copy of block k's weights right after it (same
    function applied again); ``zero_branch=k`` zeroes block k's second conv so y = relu(x).
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])
    inits.append(_init("stem_w", rng.normal(0, 0.3, (channels, 3, 3, 3))))
    nodes += [helper.make_node("Conv", ["input", "stem_w"], ["stem_conv"], pads=[1, 1, 1, 1], name="stem/conv"),
              helper.make_node("Relu", ["stem_conv"], ["stem_out"], name="stem/relu")]
    weights = [(rng.normal(0, 0.25, (channels, channels, 3, 3)), rng.normal(0, 0.25, (channels, channels, 3, 3)))
               for _ in range(blocks)]
    if zero_branch is not None:
        weights[zero_branch] = (weights[zero_branch][0], np.zeros_like(weights[zero_branch][1]))
    if duplicate_block is not None:
        weights.insert(duplicate_block + 1, weights[duplicate_block])
    current = "stem_out"
    for b, (w1, w2) in enumerate(weights):
        p = f"block{b}"
        inits += [_init(f"{p}_w1", w1), _init(f"{p}_w2", w2)]
        nodes += [
            helper.make_node("Conv", [current, f"{p}_w1"], [f"{p}_c1"], pads=[1, 1, 1, 1], name=f"{p}/conv1"),
            helper.make_node("Relu", [f"{p}_c1"], [f"{p}_r1"], name=f"{p}/relu1"),
            helper.make_node("Conv", [f"{p}_r1", f"{p}_w2"], [f"{p}_c2"], pads=[1, 1, 1, 1], name=f"{p}/conv2"),
            helper.make_node("Add", [current, f"{p}_c2"], [f"{p}_sum"], name=f"{p}/add"),
            helper.make_node("Relu", [f"{p}_sum"], [f"{p}_out"], name=f"{p}/relu2"),
        ]
        current = f"{p}_out"
    inits += [_init("fc_w", rng.normal(0, 0.3, (channels, 10))), _init("fc_b", np.zeros(10))]
    nodes += [helper.make_node("GlobalAveragePool", [current], ["gap"], name="head/gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="head/flatten"),
              helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="head/fc")]
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])
    return make_model(nodes, [x], [y], inits)


def mlp(widths: tuple[int, ...] = (16, 32, 32, 8), seed: int = 0, scaled_copy: bool = False,
        constant_layer: bool = False, nan_layer: bool = False) -> onnx.ModelProto:
    """Gemm+Relu stack on (N, widths[0]). Options add a layer that is an exact scaled copy of
    the first hidden layer (CKA 1), a constant layer, or a layer that produces NaN."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", widths[0]])
    current = "x"
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        inits += [_init(f"w{i}", rng.normal(0, 1 / np.sqrt(w_in), (w_in, w_out))), _init(f"b{i}", rng.normal(0, 0.1, w_out))]
        nodes += [helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [f"h{i}"], name=f"fc{i}"),
                  helper.make_node("Relu", [f"h{i}"], [f"a{i}"], name=f"relu{i}")]
        current = f"a{i}"
    outputs = [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", widths[-1]])]
    if scaled_copy:
        inits.append(_init("scale", np.array(3.0)))
        nodes.append(helper.make_node("Mul", ["a0", "scale"], ["a0_scaled"], name="copy"))
        outputs.append(helper.make_tensor_value_info("a0_scaled", TensorProto.FLOAT, ["N", widths[1]]))
    if constant_layer:
        inits.append(_init("zero", np.array(0.0)))
        nodes.append(helper.make_node("Mul", ["a0", "zero"], ["a0_zero"], name="constant"))
        outputs.append(helper.make_tensor_value_info("a0_zero", TensorProto.FLOAT, ["N", widths[1]]))
    if nan_layer:
        inits.append(_init("neg", np.array(-1.0)))
        nodes += [helper.make_node("Sub", ["a0", "a0"], ["a0_minus"], name="minus"),
                  helper.make_node("Sub", ["a0_minus", "neg"], ["a0_shift"], name="shift"),
                  helper.make_node("Log", ["neg"], ["nan_scalar"], name="nan_source"),
                  helper.make_node("Mul", ["a0", "nan_scalar"], ["a0_nan"], name="nan_layer")]
        outputs.append(helper.make_tensor_value_info("a0_nan", TensorProto.FLOAT, ["N", widths[1]]))
    return make_model(nodes, [x], outputs, inits)


def _gelu_tanh(nodes: list, inits: list, source: str, prefix: str) -> str:
    """Decomposed tanh-GELU, as TF/Keras exporters write it:
    0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). Its inner Add is x + f(x) with no weight."""
    inits += [_init(f"{prefix}_three", np.array(3.0)), _init(f"{prefix}_c", np.array(0.044715)),
              _init(f"{prefix}_k", np.array(np.sqrt(2 / np.pi))), _init(f"{prefix}_one", np.array(1.0)),
              _init(f"{prefix}_half", np.array(0.5))]
    p = prefix
    nodes += [helper.make_node("Pow", [source, f"{p}_three"], [f"{p}_cube"], name=f"{p}/Pow"),
              helper.make_node("Mul", [f"{p}_cube", f"{p}_c"], [f"{p}_scaled"], name=f"{p}/Mul"),
              helper.make_node("Add", [source, f"{p}_scaled"], [f"{p}_inner"], name=f"{p}/AddV2"),
              helper.make_node("Mul", [f"{p}_inner", f"{p}_k"], [f"{p}_arg"], name=f"{p}/Mul_1"),
              helper.make_node("Tanh", [f"{p}_arg"], [f"{p}_tanh"], name=f"{p}/Tanh"),
              helper.make_node("Add", [f"{p}_tanh", f"{p}_one"], [f"{p}_gate"], name=f"{p}/Add_1"),
              helper.make_node("Mul", [source, f"{p}_gate"], [f"{p}_xg"], name=f"{p}/Mul_2"),
              helper.make_node("Mul", [f"{p}_xg", f"{p}_half"], [f"{p}_out"], name=f"{p}/Mul_3")]
    return f"{p}_out"


def gelu_stem_residual(blocks: int = 3, width: int = 16, seed: int = 0) -> onnx.ModelProto:
    """A magika-like stem (Dense + decomposed tanh-GELU, twice) followed by ``blocks`` weighted
    residual blocks y = x + W2·gelu(W1·x). Only the weighted blocks are residual blocks."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])
    current = "x"
    for s in range(2):
        inits.append(_init(f"stem{s}_w", rng.normal(0, 1 / np.sqrt(width), (width, width))))
        nodes.append(helper.make_node("MatMul", [current, f"stem{s}_w"], [f"stem{s}_mm"], name=f"stem{s}/MatMul"))
        current = _gelu_tanh(nodes, inits, f"stem{s}_mm", f"ApplyActivation_{s}")
    for b in range(blocks):
        p = f"block{b}"
        inits += [_init(f"{p}_w1", rng.normal(0, 1 / np.sqrt(width), (width, width))),
                  _init(f"{p}_w2", rng.normal(0, 0.5 / np.sqrt(width), (width, width)))]
        nodes.append(helper.make_node("MatMul", [current, f"{p}_w1"], [f"{p}_h"], name=f"{p}/MatMul"))
        hidden = _gelu_tanh(nodes, inits, f"{p}_h", f"{p}/gelu")
        nodes += [helper.make_node("MatMul", [hidden, f"{p}_w2"], [f"{p}_f"], name=f"{p}/MatMul_1"),
                  helper.make_node("Add", [current, f"{p}_f"], [f"{p}_out"], name=f"{p}/Add")]
        current = f"{p}_out"
    inits.append(_init("head_w", rng.normal(0, 0.3, (width, 4))))
    nodes.append(helper.make_node("MatMul", [current, "head_w"], ["logits"], name="head"))
    return make_model(nodes, [x], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits)


def masked_attention_encoder(layers: int = 2, tokens: int = 6, width: int = 8, seed: int = 0) -> onnx.ModelProto:
    """Post-LN encoder layers on (N, T, D) with an additive attention mask built from a second
    input, as BERT exports do: scores = QKᵀ/√d + (1 − mask)·(−1e4). The mask Add is not a
    residual merge (its data does not come from the hidden state)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", tokens, width])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", tokens])
    inits += [_init("one", np.array(1.0)), _init("neg", np.array(-1e4)), _init("scale", np.array(1 / np.sqrt(width))),
              _init("ln_g", np.ones(width)), _init("ln_b", np.zeros(width)),
              numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")]
    inits += [numpy_helper.from_array(np.array([k], dtype=np.int64), f"s{k}") for k in range(3)]
    nodes += [helper.make_node("Sub", ["one", "mask"], ["mask_inv"], name="mask/Sub"),
              helper.make_node("Mul", ["mask_inv", "neg"], ["mask_add"], name="mask/Mul"),
              helper.make_node("Unsqueeze", ["mask_add", "axis1"], ["mask_bias"], name="mask/Unsqueeze")]
    inits.append(_init("emb_w", rng.normal(0, 1 / np.sqrt(width), (width, width))))
    nodes.append(helper.make_node("MatMul", ["x", "emb_w"], ["emb"], name="embeddings/MatMul"))
    current = "emb"
    for layer in range(layers):
        p = f"layer{layer}"
        for name in ("q", "k", "v", "o", "f1", "f2"):
            inits.append(_init(f"{p}_{name}", rng.normal(0, 1 / np.sqrt(width), (width, width))))
        nodes += [helper.make_node("MatMul", [current, f"{p}_q"], [f"{p}_Q"], name=f"{p}/attention/q"),
                  helper.make_node("MatMul", [current, f"{p}_k"], [f"{p}_K"], name=f"{p}/attention/k"),
                  helper.make_node("MatMul", [current, f"{p}_v"], [f"{p}_V"], name=f"{p}/attention/v"),
                  helper.make_node("Transpose", [f"{p}_K"], [f"{p}_Kt"], perm=[0, 2, 1], name=f"{p}/attention/kt"),
                  helper.make_node("MatMul", [f"{p}_Q", f"{p}_Kt"], [f"{p}_qk"], name=f"{p}/attention/qk"),
                  helper.make_node("Mul", [f"{p}_qk", "scale"], [f"{p}_scores"], name=f"{p}/attention/scale"),
                  # the mask is broadcast to the scores' shape read off the hidden state (shape edge only)
                  helper.make_node("Shape", [current], [f"{p}_shape"], name=f"{p}/attention/Shape"),
                  helper.make_node("Slice", [f"{p}_shape", "s0", "s2"], [f"{p}_nt"], name=f"{p}/attention/nt"),
                  helper.make_node("Slice", [f"{p}_shape", "s1", "s2"], [f"{p}_t"], name=f"{p}/attention/t"),
                  helper.make_node("Concat", [f"{p}_nt", f"{p}_t"], [f"{p}_ntt"], axis=0, name=f"{p}/attention/ntt"),
                  helper.make_node("Expand", ["mask_bias", f"{p}_ntt"], [f"{p}_mask"], name=f"{p}/attention/Expand"),
                  helper.make_node("Add", [f"{p}_scores", f"{p}_mask"], [f"{p}_masked"], name=f"{p}/attention/Add"),
                  helper.make_node("Softmax", [f"{p}_masked"], [f"{p}_probs"], axis=-1, name=f"{p}/attention/Softmax"),
                  helper.make_node("MatMul", [f"{p}_probs", f"{p}_V"], [f"{p}_ctx"], name=f"{p}/attention/ctx"),
                  helper.make_node("MatMul", [f"{p}_ctx", f"{p}_o"], [f"{p}_attn"], name=f"{p}/attention/o"),
                  helper.make_node("Add", [f"{p}_attn", current], [f"{p}_res1"], name=f"{p}/attention/res"),
                  helper.make_node("LayerNormalization", [f"{p}_res1", "ln_g", "ln_b"], [f"{p}_ln1"],
                                   axis=-1, name=f"{p}/attention/ln"),
                  helper.make_node("MatMul", [f"{p}_ln1", f"{p}_f1"], [f"{p}_h"], name=f"{p}/ffn/f1"),
                  helper.make_node("Relu", [f"{p}_h"], [f"{p}_hr"], name=f"{p}/ffn/relu"),
                  helper.make_node("MatMul", [f"{p}_hr", f"{p}_f2"], [f"{p}_ff"], name=f"{p}/ffn/f2"),
                  helper.make_node("Add", [f"{p}_ff", f"{p}_ln1"], [f"{p}_res2"], name=f"{p}/ffn/res"),
                  helper.make_node("LayerNormalization", [f"{p}_res2", "ln_g", "ln_b"], [f"{p}_out"],
                                   axis=-1, name=f"{p}/ffn/ln")]
        current = f"{p}_out"
    out = helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", tokens, width])
    return make_model(nodes, [x, mask], [out], inits)
