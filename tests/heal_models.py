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
