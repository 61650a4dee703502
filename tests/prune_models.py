"""Small ONNX models with known structure for the prune tests (built in code, never committed)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTH = 16


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def _model(nodes, inits, inputs, outputs, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="redaudit-tests")
    helper.set_model_props(model, {"origin": "prune-tests"})
    onnx.checker.check_model(model, full_check=True)
    return model


def residual_mlp(blocks: int = 4, branch_scale: dict[int, float] | None = None, seed: int = 0,
                 downsample_after: int | None = None, classes: int = 5) -> onnx.ModelProto:
    """x → stem → `blocks` residual blocks y = x + W2·relu(W1·x) → head (classifier logits).

    ``branch_scale[i]`` multiplies block i's W2 (0 makes the branch output exactly zero).
    ``downsample_after=i`` inserts after block i a width-changing residual block
    (y = Wd·x + W2·relu(W1·x)) that must never be offered for removal.
    """
    rng = np.random.default_rng(seed)
    scale = branch_scale or {}
    nodes, inits = [], []
    inits.append(_init("stem.W", rng.normal(0, 0.3, (8, WIDTH))))
    nodes.append(helper.make_node("MatMul", ["x", "stem.W"], ["stem.out"], name="stem"))
    nodes.append(helper.make_node("Relu", ["stem.out"], ["stem.act"], name="stem.relu"))
    current, width = "stem.act", WIDTH
    for i in range(blocks):
        p = f"block{i}"
        inits.append(_init(f"{p}.W1", rng.normal(0, 0.4, (width, width))))
        inits.append(_init(f"{p}.W2", rng.normal(0, 0.4, (width, width)) * scale.get(i, 1.0)))
        nodes += [helper.make_node("MatMul", [current, f"{p}.W1"], [f"{p}.h"], name=f"{p}.fc1"),
                  helper.make_node("Relu", [f"{p}.h"], [f"{p}.a"], name=f"{p}.relu"),
                  helper.make_node("MatMul", [f"{p}.a", f"{p}.W2"], [f"{p}.f"], name=f"{p}.fc2"),
                  helper.make_node("Add", [current, f"{p}.f"], [f"{p}.out"], name=f"{p}.add")]
        current = f"{p}.out"
        if downsample_after == i:
            q, new = "down", width * 2
            inits += [_init(f"{q}.Wd", rng.normal(0, 0.3, (width, new))),
                      _init(f"{q}.W1", rng.normal(0, 0.3, (width, new))),
                      _init(f"{q}.W2", rng.normal(0, 0.3, (new, new)))]
            nodes += [helper.make_node("MatMul", [current, f"{q}.Wd"], [f"{q}.skip"], name=f"{q}.proj"),
                      helper.make_node("MatMul", [current, f"{q}.W1"], [f"{q}.h"], name=f"{q}.fc1"),
                      helper.make_node("Relu", [f"{q}.h"], [f"{q}.a"], name=f"{q}.relu"),
                      helper.make_node("MatMul", [f"{q}.a", f"{q}.W2"], [f"{q}.f"], name=f"{q}.fc2"),
                      helper.make_node("Add", [f"{q}.skip", f"{q}.f"], [f"{q}.out"], name=f"{q}.add")]
            current, width = f"{q}.out", new
    inits.append(_init("head.W", rng.normal(0, 0.3, (width, classes))))
    nodes.append(helper.make_node("MatMul", [current, "head.W"], ["logits"], name="head"))
    return _model(nodes, inits,
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])])


def residual_cnn(blocks: int = 3, seed: int = 0, zero_block: int | None = None) -> onnx.ModelProto:
    """A ResNet-like CNN: conv stem, blocks y = relu(x + conv(relu(conv(x)))), pooled output."""
    rng = np.random.default_rng(seed)
    channels = 4
    nodes = [helper.make_node("Conv", ["img", "stem.W"], ["stem.c"], pads=[1, 1, 1, 1], name="stem"),
             helper.make_node("Relu", ["stem.c"], ["stem.r"], name="stem.relu")]
    inits = [_init("stem.W", rng.normal(0, 0.4, (channels, 3, 3, 3)))]
    current = "stem.r"
    for i in range(blocks):
        p = f"layer{i}"
        weight2 = rng.normal(0, 0.3, (channels, channels, 3, 3)) * (0.0 if i == zero_block else 1.0)
        inits += [_init(f"{p}.W1", rng.normal(0, 0.3, (channels, channels, 3, 3))),
                  _init(f"{p}.W2", weight2), _init(f"{p}.B2", np.zeros(channels))]
        nodes += [helper.make_node("Conv", [current, f"{p}.W1"], [f"{p}.c1"], pads=[1, 1, 1, 1], name=f"{p}.conv1"),
                  helper.make_node("Relu", [f"{p}.c1"], [f"{p}.r1"], name=f"{p}.relu1"),
                  helper.make_node("Conv", [f"{p}.r1", f"{p}.W2", f"{p}.B2"], [f"{p}.c2"], pads=[1, 1, 1, 1], name=f"{p}.conv2"),
                  helper.make_node("Add", [f"{p}.c2", current], [f"{p}.sum"], name=f"{p}.add"),
                  helper.make_node("Relu", [f"{p}.sum"], [f"{p}.out"], name=f"{p}.relu2")]
        current = f"{p}.out"
    nodes.append(helper.make_node("GlobalAveragePool", [current], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], name="flatten"))
    return _model(nodes, inits,
                  [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 3, 8, 8])],
                  [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", channels])])


def plain_chain(widths: tuple[int, ...] = (16, 16, 32, 16, 16)) -> onnx.ModelProto:
    """Dense layers with bias and ReLU, no skip connections; the last layer's output is the
    graph output (so removing the last block needs an Identity to keep the output name)."""
    rng = np.random.default_rng(3)
    nodes, inits, current = [], [], "x"
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        inits += [_init(f"fc{i}.W", rng.normal(0, 0.3, (w_in, w_out))), _init(f"fc{i}.b", rng.normal(0, 0.1, w_out))]
        out = f"fc{i}.out" if i < len(widths) - 2 else "y"
        nodes += [helper.make_node("MatMul", [current, f"fc{i}.W"], [f"fc{i}.mm"], name=f"fc{i}"),
                  helper.make_node("Add", [f"fc{i}.mm", f"fc{i}.b"], [f"fc{i}.pre"], name=f"fc{i}.bias"),
                  helper.make_node("Relu", [f"fc{i}.pre"], [out], name=f"fc{i}.relu")]
        current = out
    return _model(nodes, inits,
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", widths[0]])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", widths[-1]])])


def no_removable_block() -> onnx.ModelProto:
    """One dense layer 8 → 4: nothing can be taken out without changing a shape."""
    inits = [_init("W", np.ones((8, 4)))]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")]
    return _model(nodes, inits,
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
