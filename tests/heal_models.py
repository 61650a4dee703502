"""Generated models for the healing tests: residual stacks in which one chosen block is exactly
affine (so a fitted map must recover it), followed by a linear head (so the map can be folded)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def _model(nodes, inits, inputs, outputs) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)], producer_name="redaudit-tests")
    onnx.checker.check_model(model, full_check=True)
    return model


def token_stack(blocks: int = 3, width: int = 8, linear_block: int | None = 1, head: str = "matmul",
                tokens: bool = True, seed: int = 0, classes: int = 4) -> onnx.ModelProto:
    """x (N, S, W) (or (N, W) with ``tokens=False``) → residual blocks → linear head.

    Block i computes ``x + relu(x·W1)·W2``; the ``linear_block`` computes ``x + x·W + c``
    (affine, so healing can recover it exactly). ``head``: "matmul" (MatMul + bias Add),
    "gemm" (Gemm, transB=1, with C; needs ``tokens=False``) or "relu" (a non-linear consumer).
    """
    rng = np.random.default_rng(seed)
    nodes, inits, current = [], [], "x"
    for i in range(blocks):
        p = f"block{i}"
        if i == linear_block:
            inits += [_init(f"{p}.W", rng.normal(0, 0.4, (width, width))), _init(f"{p}.c", rng.normal(0, 0.5, width))]
            nodes += [helper.make_node("MatMul", [current, f"{p}.W"], [f"{p}.m"], name=f"{p}.fc"),
                      helper.make_node("Add", [f"{p}.m", f"{p}.c"], [f"{p}.f"], name=f"{p}.bias")]
        else:
            inits += [_init(f"{p}.W1", rng.normal(0, 0.4, (width, width))),
                      _init(f"{p}.W2", rng.normal(0, 0.4, (width, width)))]
            nodes += [helper.make_node("MatMul", [current, f"{p}.W1"], [f"{p}.h"], name=f"{p}.fc1"),
                      helper.make_node("Relu", [f"{p}.h"], [f"{p}.a"], name=f"{p}.relu"),
                      helper.make_node("MatMul", [f"{p}.a", f"{p}.W2"], [f"{p}.f"], name=f"{p}.fc2")]
        nodes.append(helper.make_node("Add", [current, f"{p}.f"], [f"{p}.out"], name=f"{p}.add"))
        current = f"{p}.out"
    if head == "matmul":
        inits += [_init("head.W", rng.normal(0, 0.4, (width, classes))), _init("head.b", rng.normal(0, 0.1, classes))]
        nodes += [helper.make_node("MatMul", [current, "head.W"], ["head.m"], name="head"),
                  helper.make_node("Add", ["head.m", "head.b"], ["y"], name="head.bias")]
    elif head == "gemm":
        inits += [_init("head.W", rng.normal(0, 0.4, (classes, width))), _init("head.b", rng.normal(0, 0.1, classes))]
        nodes.append(helper.make_node("Gemm", [current, "head.W", "head.b"], ["y"], name="head", transB=1, alpha=0.5))
    else:
        classes = width
        nodes.append(helper.make_node("Relu", [current], ["y"], name="head"))
    dims = ["N", "S", width] if tokens else ["N", width]
    return _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims[:-1] + [classes])])


def conv_stack(blocks: int = 3, channels: int = 4, linear_block: int | None = 1, head: str = "conv",
               seed: int = 0) -> onnx.ModelProto:
    """img (N, C, 6, 6) → residual blocks → 1×1 Conv head (``head="conv"``) or Relu → GAP; or
    ``head="gap-gemm"`` (GlobalAveragePool → Flatten → Gemm) / ``"mean-matmul"`` (ReduceMean over
    H, W → MatMul + Add), a classifier after a spatial average.

    Block i is ``relu(x + conv3x3(relu(conv3x3(x))))``; the ``linear_block`` is
    ``x + conv1x1(x) + c`` — a per-pixel affine map of the channels, recoverable exactly.
    """
    rng = np.random.default_rng(seed)
    nodes, inits, current = [], [], "img"
    for i in range(blocks):
        p = f"layer{i}"
        if i == linear_block:
            inits += [_init(f"{p}.W", rng.normal(0, 0.4, (channels, channels, 1, 1))),
                      _init(f"{p}.B", rng.normal(0, 0.5, channels))]
            nodes += [helper.make_node("Conv", [current, f"{p}.W", f"{p}.B"], [f"{p}.f"], name=f"{p}.conv"),
                      helper.make_node("Add", [current, f"{p}.f"], [f"{p}.out"], name=f"{p}.add")]
        else:
            inits += [_init(f"{p}.W1", rng.normal(0, 0.3, (channels, channels, 3, 3))),
                      _init(f"{p}.W2", rng.normal(0, 0.3, (channels, channels, 3, 3)))]
            nodes += [helper.make_node("Conv", [current, f"{p}.W1"], [f"{p}.c1"], pads=[1] * 4, name=f"{p}.conv1"),
                      helper.make_node("Relu", [f"{p}.c1"], [f"{p}.r1"], name=f"{p}.relu1"),
                      helper.make_node("Conv", [f"{p}.r1", f"{p}.W2"], [f"{p}.c2"], pads=[1] * 4, name=f"{p}.conv2"),
                      helper.make_node("Add", [current, f"{p}.c2"], [f"{p}.sum"], name=f"{p}.add"),
                      helper.make_node("Relu", [f"{p}.sum"], [f"{p}.out"], name=f"{p}.relu2")]
        current = f"{p}.out"
    if head in ("gap-gemm", "mean-matmul"):  # spatial average, then a linear classifier
        if head == "gap-gemm":
            inits += [_init("head.W", rng.normal(0, 0.4, (6, channels))), _init("head.B", rng.normal(0, 0.1, 6))]
            nodes += [helper.make_node("GlobalAveragePool", [current], ["pooled"], name="pool"),
                      helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
                      helper.make_node("Gemm", ["flat", "head.W", "head.B"], ["y"], name="head", transB=1)]
        else:
            inits += [_init("head.W", rng.normal(0, 0.4, (channels, 6))), _init("head.B", rng.normal(0, 0.1, 6))]
            nodes += [helper.make_node("ReduceMean", [current], ["flat"], name="pool", axes=[2, 3], keepdims=0),
                      helper.make_node("MatMul", ["flat", "head.W"], ["head.m"], name="head"),
                      helper.make_node("Add", ["head.m", "head.B"], ["y"], name="head.bias")]
        return _model(nodes, inits, [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", channels, 6, 6])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])])
    if head == "conv":
        inits += [_init("head.W", rng.normal(0, 0.4, (6, channels, 1, 1))), _init("head.B", rng.normal(0, 0.1, 6))]
        nodes.append(helper.make_node("Conv", [current, "head.W", "head.B"], ["head.out"], name="head"))
        width = 6
    else:
        nodes.append(helper.make_node("Relu", [current], ["head.out"], name="head"))
        width = channels
    nodes += [helper.make_node("GlobalAveragePool", ["head.out"], ["pooled"], name="pool"),
              helper.make_node("Flatten", ["pooled"], ["y"], name="flatten")]
    return _model(nodes, inits, [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", channels, 6, 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])])


def padded_encoder(blocks: int = 3, width: int = 8, vocab: int = 20, mixing: str = "masked", seq: int | str = "S",
                   seed: int = 0) -> onnx.ModelProto:
    """input_ids, attention_mask (N, S) → embedding → residual blocks that mix tokens → (N, S, W).

    Each block computes ``x + relu(h + m)·W2`` with ``h = x·W1`` and m the mean of h over the sequence:
    over the real tokens only (``mixing="masked"``: padding never reaches a real token, like an
    encoder that masks attention) or over every position (``"unmasked"``: padding changes every
    token, so running a batch without its padding changes the result). ``seq`` is the sequence
    axis as declared (an int fixes it).
    """
    rng = np.random.default_rng(seed)
    inits = [_init("embed", rng.normal(0, 1.0, (vocab, width)))]
    nodes = [helper.make_node("Gather", ["embed", "input_ids"], ["emb"], name="embedding"),
             helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT, name="mask.cast"),
             helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"], name="mask.unsqueeze"),
             helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=1, name="mask.count")]
    inits += [numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
              numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")]
    current = "emb"
    for i in range(blocks):
        p = f"block{i}"
        inits += [_init(f"{p}.W1", rng.normal(0, 0.4, (width, width))), _init(f"{p}.W2", rng.normal(0, 0.4, (width, width)))]
        nodes.append(helper.make_node("MatMul", [current, f"{p}.W1"], [f"{p}.h"], name=f"{p}.fc1"))
        if mixing == "masked":
            nodes += [helper.make_node("Mul", [f"{p}.h", "mask3"], [f"{p}.hm"], name=f"{p}.mask"),
                      helper.make_node("ReduceSum", [f"{p}.hm", "axis1"], [f"{p}.sum"], keepdims=1, name=f"{p}.sum"),
                      helper.make_node("Div", [f"{p}.sum", "count"], [f"{p}.mean"], name=f"{p}.mean")]
        else:
            nodes.append(helper.make_node("ReduceMean", [f"{p}.h"], [f"{p}.mean"], axes=[1], keepdims=1,
                                          name=f"{p}.mean"))
        nodes += [helper.make_node("Add", [f"{p}.h", f"{p}.mean"], [f"{p}.mixed"], name=f"{p}.mix"),
                  helper.make_node("Relu", [f"{p}.mixed"], [f"{p}.a"], name=f"{p}.relu"),
                  helper.make_node("MatMul", [f"{p}.a", f"{p}.W2"], [f"{p}.f"], name=f"{p}.fc2"),
                  helper.make_node("Add", [current, f"{p}.f"], [f"{p}.out"], name=f"{p}.add")]
        current = f"{p}.out"
    nodes.append(helper.make_node("Identity", [current], ["hidden"], name="output"))
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["N", seq]) for name in ("input_ids", "attention_mask")]
    return _model(nodes, inits, inputs, [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["N", seq, width])])


def padded_tokens(count: int, seq: int = 12, vocab: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Right-padded token batches: lengths 1 … seq (most short), ids 0 (padding) after them."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.25, count), seq)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, vocab, (count, seq)) * mask
    return {"input_ids": ids.astype(np.int64), "attention_mask": mask}


def attention_stack(width: int = 8, heads: int = 2, seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """x (N, S, W) → an attention block → a block that mixes tokens with that block's attention →
    an MLP block → MatMul head.

    Block 0: P = softmax(q·kᵀ/√d) per head (N, H, S, S), ``x + mean_heads(P)·(x·Wv)``.
    Block 1: ``x + mean_heads(P₀)·(x·B) + x·C`` — exactly ``x·(I + C) + (P̄₀x)·B``, which an
    attention-mix map recovers and no per-token map can. ``opset`` 18 moves ReduceMean's axes
    to an input (the healed graph must follow).
    """
    rng = np.random.default_rng(seed)
    d = width // heads
    inits = [_init(name, rng.normal(0, scale, (width, width))) for name, scale in
             (("q.W", 0.8), ("k.W", 0.8), ("v.W", 0.4), ("mix.B", 0.5), ("mix.C", 0.3), ("mlp.W1", 0.4),
              ("mlp.W2", 0.4), ("head.W", 0.4))]
    inits += [numpy_helper.from_array(np.array([0, 0, heads, d], dtype=np.int64), "split_shape"),
              _init("scale", np.array(1.0 / np.sqrt(d))),
              numpy_helper.from_array(np.array([1], dtype=np.int64), "heads_axis")]
    nodes = [helper.make_node("MatMul", ["x", "q.W"], ["q"], name="att.q"),
             helper.make_node("MatMul", ["x", "k.W"], ["k"], name="att.k"),
             helper.make_node("Reshape", ["q", "split_shape"], ["q4"], name="att.q.split"),
             helper.make_node("Reshape", ["k", "split_shape"], ["k4"], name="att.k.split"),
             helper.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3], name="att.q.heads"),
             helper.make_node("Transpose", ["k4"], ["kh"], perm=[0, 2, 3, 1], name="att.k.heads"),
             helper.make_node("MatMul", ["qh", "kh"], ["scores_raw"], name="att.scores"),
             helper.make_node("Mul", ["scores_raw", "scale"], ["scores"], name="att.scale"),
             helper.make_node("Softmax", ["scores"], ["probs"], axis=-1, name="att.softmax"),
             (helper.make_node("ReduceMean", ["probs"], ["probs_mean"], axes=[1], keepdims=0, name="att.mean")
              if opset < 18 else helper.make_node("ReduceMean", ["probs", "heads_axis"], ["probs_mean"], keepdims=0,
                                                  name="att.mean")),
             helper.make_node("MatMul", ["x", "v.W"], ["v"], name="att.v"),
             helper.make_node("MatMul", ["probs_mean", "v"], ["att.f"], name="att.context"),
             helper.make_node("Add", ["x", "att.f"], ["block0.out"], name="block0.add"),
             helper.make_node("MatMul", ["block0.out", "mix.B"], ["mix.xb"], name="mix.b"),
             helper.make_node("MatMul", ["probs_mean", "mix.xb"], ["mix.ctx"], name="mix.context"),
             helper.make_node("MatMul", ["block0.out", "mix.C"], ["mix.xc"], name="mix.c"),
             helper.make_node("Add", ["mix.ctx", "mix.xc"], ["mix.f"], name="mix.sum"),
             helper.make_node("Add", ["block0.out", "mix.f"], ["block1.out"], name="block1.add"),
             helper.make_node("MatMul", ["block1.out", "mlp.W1"], ["mlp.h"], name="mlp.fc1"),
             helper.make_node("Relu", ["mlp.h"], ["mlp.a"], name="mlp.relu"),
             helper.make_node("MatMul", ["mlp.a", "mlp.W2"], ["mlp.f"], name="mlp.fc2"),
             helper.make_node("Add", ["block1.out", "mlp.f"], ["block2.out"], name="block2.add"),
             helper.make_node("MatMul", ["block2.out", "head.W"], ["y"], name="head")]
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "S", width])], inits),
        opset_imports=[helper.make_opsetid("", opset)], producer_name="redaudit-tests")
    onnx.checker.check_model(model, full_check=True)
    return model
