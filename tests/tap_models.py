"""Generated models for tap decisions: hidden ranks, Conv1d maps, recurrent layers."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from models import _init, make_model

TOKENS, WIDTH = 6, 16


def token_blocks(hidden_rank: bool, blocks: int = 3, seed: int = 0) -> onnx.ModelProto:
    """(N, 96) → Reshape (N, 6, 16) → MatMul+Relu stem → residual MLP blocks on tokens.

    With ``hidden_rank`` the Reshape target goes through a Compress, so ONNX shape inference
    cannot tell the rank of anything downstream; the computation is the same as the static twin."""
    rng = np.random.default_rng(seed)
    inits = [helper.make_tensor("target", TensorProto.INT64, [3], [0, TOKENS, WIDTH]),
             _init("stem_w", rng.normal(0, 0.3, (WIDTH, WIDTH)))]
    nodes = []
    target = "target"
    if hidden_rank:
        inits.append(helper.make_tensor("keep", TensorProto.BOOL, [3], [True, True, True]))
        nodes.append(helper.make_node("Compress", ["target", "keep"], ["target_hidden"], name="hide"))
        target = "target_hidden"
    nodes += [helper.make_node("Reshape", ["x", target], ["tokens"], name="reshape"),
              helper.make_node("MatMul", ["tokens", "stem_w"], ["stem_mm"], name="stem/mm"),
              helper.make_node("Relu", ["stem_mm"], ["stem_out"], name="stem/relu")]
    current = "stem_out"
    for b in range(blocks):
        inits += [_init(f"b{b}_w1", rng.normal(0, 0.3, (WIDTH, WIDTH))), _init(f"b{b}_w2", rng.normal(0, 0.3, (WIDTH, WIDTH)))]
        nodes += [helper.make_node("MatMul", [current, f"b{b}_w1"], [f"b{b}_h"], name=f"block{b}/mm1"),
                  helper.make_node("Relu", [f"b{b}_h"], [f"b{b}_r"], name=f"block{b}/relu"),
                  helper.make_node("MatMul", [f"b{b}_r", f"b{b}_w2"], [f"b{b}_f"], name=f"block{b}/mm2"),
                  helper.make_node("Add", [current, f"b{b}_f"], [f"block{b}_out"], name=f"block{b}/add")]
        current = f"block{b}_out"
    nodes.append(helper.make_node("Flatten", [current], ["y"], name="head/flatten"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", TOKENS * WIDTH])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "F"])
    return make_model(nodes, [x], [y], inits)


def conv1d_blocks(blocks: int = 3, channels: int = 8, length: int = 12, seed: int = 0) -> onnx.ModelProto:
    """(N, 4, L) → Conv1d+Relu stem → residual Conv1d blocks: 3-D (N, C, L) channel maps."""
    rng = np.random.default_rng(seed)
    inits = [_init("stem_w", rng.normal(0, 0.4, (channels, 4, 3)))]
    nodes = [helper.make_node("Conv", ["x", "stem_w"], ["stem_c"], pads=[1, 1], name="stem/conv"),
             helper.make_node("Relu", ["stem_c"], ["stem_out"], name="stem/relu")]
    current = "stem_out"
    for b in range(blocks):
        inits += [_init(f"b{b}_w1", rng.normal(0, 0.3, (channels, channels, 3))),
                  _init(f"b{b}_w2", rng.normal(0, 0.3, (channels, channels, 3)))]
        nodes += [helper.make_node("Conv", [current, f"b{b}_w1"], [f"b{b}_c1"], pads=[1, 1], name=f"block{b}/conv1"),
                  helper.make_node("Relu", [f"b{b}_c1"], [f"b{b}_r"], name=f"block{b}/relu1"),
                  helper.make_node("Conv", [f"b{b}_r", f"b{b}_w2"], [f"b{b}_c2"], pads=[1, 1], name=f"block{b}/conv2"),
                  helper.make_node("Add", [current, f"b{b}_c2"], [f"b{b}_sum"], name=f"block{b}/add"),
                  helper.make_node("Relu", [f"b{b}_sum"], [f"block{b}_out"], name=f"block{b}/relu2")]
        current = f"block{b}_out"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, length])
    y = helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", channels, length])
    return make_model(nodes, [x], [y], inits)


def lstm_node(steps: int = 7, features: int = 8, hidden: int = 12, seed: int = 0) -> onnx.ModelProto:
    """(N, T, F) → MatMul+Tanh embedding → bidirectional ONNX LSTM (time-major) → MatMul head."""
    rng = np.random.default_rng(seed)
    inits = [_init("embed_w", rng.normal(0, 0.4, (features, features))),
             _init("W", rng.normal(0, 0.3, (2, 4 * hidden, features))),
             _init("R", rng.normal(0, 0.3, (2, 4 * hidden, hidden))),
             _init("B", rng.normal(0, 0.1, (2, 8 * hidden))),
             _init("head_w", rng.normal(0, 0.3, (2 * hidden, 5))),
             helper.make_tensor("flat", TensorProto.INT64, [3], [0, 0, 2 * hidden])]
    nodes = [helper.make_node("MatMul", ["x", "embed_w"], ["embed_mm"], name="embed/mm"),
             helper.make_node("Tanh", ["embed_mm"], ["embed_out"], name="embed/tanh"),
             helper.make_node("Transpose", ["embed_out"], ["time_major"], perm=[1, 0, 2], name="to_time_major"),
             helper.make_node("LSTM", ["time_major", "W", "R", "B"], ["Y", "Y_h", "Y_c"], hidden_size=hidden,
                              direction="bidirectional", name="lstm"),
             helper.make_node("Transpose", ["Y"], ["Y_batch"], perm=[2, 0, 1, 3], name="to_batch_major"),
             helper.make_node("Reshape", ["Y_batch", "flat"], ["seq"], name="merge_directions"),
             helper.make_node("MatMul", ["seq", "head_w"], ["logits"], name="head/mm")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", steps, features])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", steps, 5])
    return make_model(nodes, [x], [y], inits)


def export_unrolled(path, cell: str = "lstm", steps: int = 6, features: int = 8, hidden: int = 16,
                    bidirectional: bool = False, seed: int = 0) -> None:
    """A torch module that loops an LSTMCell/GRUCell over time steps (the exporter unrolls the
    loop: the same weights at every step), stacks the step outputs and applies a head; exported
    with the TorchScript exporter as many real CRNNs were."""
    import torch
    from torch import nn

    class Unrolled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(features, features)
            make = nn.LSTMCell if cell == "lstm" else nn.GRUCell
            self.forward_cell = make(features, hidden)
            self.backward_cell = make(features, hidden) if bidirectional else None
            self.head = nn.Linear(hidden * (2 if bidirectional else 1), 5)

        def run(self, module, x, order):
            h = x.new_zeros(x.shape[0], hidden)
            c = x.new_zeros(x.shape[0], hidden)
            outs = {}
            for t in order:
                if cell == "lstm":
                    h, c = module(x[:, t], (h, c))
                else:
                    h = module(x[:, t], h)
                outs[t] = h
            return torch.stack([outs[t] for t in range(steps)], 1)

        def forward(self, x):
            x = torch.relu(self.embed(x))
            seq = self.run(self.forward_cell, x, range(steps))
            if self.backward_cell is not None:
                seq = torch.cat([seq, self.run(self.backward_cell, x, range(steps - 1, -1, -1))], -1)
            return self.head(seq)

    torch.manual_seed(seed)
    model = Unrolled().eval()
    torch.onnx.export(model, torch.zeros(2, steps, features), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17, dynamo=False)
