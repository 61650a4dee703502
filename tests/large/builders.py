"""Models whose weights live in external data, generated in seconds (no exporter): a residual
MLP, ``h ← h + relu(h) @ W_i``, written tensor by tensor into one ``model.data`` beside a small
``model.onnx``. At the defaults (36 layers of 4096²) the data is 2.25 GiB: past protobuf's 2 GB.

Reused by the prune/heal end-to-end tests of large models, so it takes only a folder and sizes.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

#: Layers × width² float32 of the default model: 36 × 64 MiB = 2.25 GiB.
LARGE_LAYERS = 36
LARGE_WIDTH = 4096


@dataclass(frozen=True)
class ExternalMLP:
    """Paths of a generated model and the names of its residual-stream tensors (block outputs)."""

    model: Path
    data: Path
    input_name: str
    stream: list[str]  # h_1 .. h_L: the output of each residual block
    data_bytes: int

    def remove(self) -> None:
        """Free the disk space (the data file is the size of the model)."""
        shutil.rmtree(self.model.parent, ignore_errors=True)


def residual_mlp_external(folder: Path, *, layers: int = LARGE_LAYERS, width: int = LARGE_WIDTH,
                          seed: int = 0, location: str = "model.data") -> ExternalMLP:
    """Write ``folder/model.onnx`` and ``folder/location``. Weights are one random float32 block
    whose rows are permuted differently per layer (distinct tensors at the cost of a gather, not
    of a random draw each: 36 draws of 4096² take ~20 s on a loaded machine), scaled so the
    residual stream stays O(1) through every layer."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((width, width), dtype=np.float32)
    base *= np.float32(0.5 / np.sqrt(width))
    initializers, nodes = [], []
    stream, current, offset = [], "x", 0
    with open(folder / location, "wb") as data:
        for layer in range(layers):
            weight = base[rng.permutation(width)]
            data.write(weight.tobytes())
            tensor = onnx.TensorProto(name=f"w{layer}", data_type=TensorProto.FLOAT, dims=[width, width],
                                      data_location=TensorProto.EXTERNAL)
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(weight.nbytes))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += weight.nbytes
            initializers.append(tensor)
            nodes += [helper.make_node("Relu", [current], [f"r{layer}"], name=f"relu{layer}"),
                      helper.make_node("MatMul", [f"r{layer}", f"w{layer}"], [f"m{layer}"], name=f"matmul{layer}"),
                      helper.make_node("Add", [current, f"m{layer}"], [f"h{layer + 1}"], name=f"add{layer}")]
            current = f"h{layer + 1}"
            stream.append(current)
    graph = helper.make_graph(nodes, "residual_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", width])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests.large")
    model.ir_version = 8
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())  # a few KB: the weights are all in the data file
    return ExternalMLP(path, folder / location, "x", stream, offset)


def with_outputs(model: Path, names: list[str], target_name: str = "taps.onnx") -> Path:
    """A copy of ``model`` in the same folder (so its external data resolves as plain
    onnxruntime resolves it, by path) whose outputs are ``names``: the independent way to read
    the tensors a scan taps."""
    proto = onnx.load(str(model), load_external_data=False)
    del proto.graph.output[:]
    proto.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names)
    target = model.parent / target_name
    target.write_bytes(proto.SerializeToString())
    return target
