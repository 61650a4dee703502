"""Models whose weights live in external data, generated in code (the prune/write tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def wide_residual_mlp(width: int = 64, blocks: int = 3, classes: int = 5, seed: int = 0) -> onnx.ModelProto:
    """x (N, 8) → stem → ``blocks`` residual blocks y = x + W2·relu(W1·x + b1) → head (logits).
    4·width² bytes per matrix: width 1024 and 6 blocks is a 50 MB model."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...], scale: float) -> TensorProto:
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    inits = [init("stem.W", (8, width), 0.3)]
    nodes = [helper.make_node("MatMul", ["x", "stem.W"], ["stem.out"], name="stem"),
             helper.make_node("Relu", ["stem.out"], ["stem.act"], name="stem.relu")]
    current = "stem.act"
    for i in range(blocks):
        p = f"block{i}"
        inits += [init(f"{p}.W1", (width, width), 1.0 / np.sqrt(width)), init(f"{p}.b1", (width,), 0.1),
                  init(f"{p}.W2", (width, width), 0.5 / np.sqrt(width))]
        nodes += [helper.make_node("MatMul", [current, f"{p}.W1"], [f"{p}.h"], name=f"{p}.fc1"),
                  helper.make_node("Add", [f"{p}.h", f"{p}.b1"], [f"{p}.hb"], name=f"{p}.bias"),
                  helper.make_node("Relu", [f"{p}.hb"], [f"{p}.a"], name=f"{p}.relu"),
                  helper.make_node("MatMul", [f"{p}.a", f"{p}.W2"], [f"{p}.f"], name=f"{p}.fc2"),
                  helper.make_node("Add", [current, f"{p}.f"], [f"{p}.out"], name=f"{p}.add")]
        current = f"{p}.out"
    inits.append(init("head.W", (width, classes), 0.3))
    nodes.append(helper.make_node("MatMul", [current, "head.W"], ["logits"], name="head"))
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="redaudit-tests")


def save_external(model: onnx.ModelProto, path: Path, location: str | None = None) -> Path:
    """``model`` saved as ``path`` with every tensor of 1 KiB or more in one data file beside it
    (``location``, default ``<name>.data``); ``model`` itself is left inline."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location or path.stem + ".data", size_threshold=1024)
    return path
