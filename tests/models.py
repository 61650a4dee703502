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
