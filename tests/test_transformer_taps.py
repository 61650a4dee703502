"""Block taps on a real exported transformer: one IR per encoder layer plus the embedding stem."""
from __future__ import annotations

import onnx
import pytest

import redaudit
from redaudit.core.graph import GraphIndex
from redaudit.core.tap import select_taps

torch = pytest.importorskip("torch")


def _export_tiny_encoder(path, layers: int = 3, width: int = 32) -> None:
    from torch import nn

    class TinyEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(100, width)
            self.norm = nn.LayerNorm(width)
            self.layers = nn.ModuleList(nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
                                        for _ in range(layers))

        def forward(self, ids):
            hidden = self.norm(self.embed(ids))
            for layer in self.layers:
                hidden = layer(hidden)
            return hidden

    torch.manual_seed(0)
    model = TinyEncoder().eval()
    torch.onnx.export(model, torch.zeros(2, 10, dtype=torch.long), str(path), input_names=["ids"],
                      output_names=["hidden"], dynamic_axes={"ids": {0: "N", 1: "T"}, "hidden": {0: "N", 1: "T"}},
                      opset_version=17, dynamo=False)


@pytest.mark.torch
def test_one_block_ir_per_encoder_layer(tmp_path):
    path = tmp_path / "encoder.onnx"
    _export_tiny_encoder(path)
    selection = select_taps(GraphIndex.build(onnx.load(str(path))), "block")
    tensors = [p.tensor for p in selection.points]
    assert selection.level == "block"
    assert tensors == ["/norm/LayerNormalization_output_0", "/layers.0/norm2/LayerNormalization_output_0",
                       "/layers.1/norm2/LayerNormalization_output_0", "hidden"]
    result = redaudit.scan(str(path), samples=256, dims={"T": 10}, int_range=(0, 100))
    assert result.similarity.shape == (4, 4)
    assert all(len(layer.shape) == 3 for layer in result.layers)  # (N, T, D), pooled over tokens


@pytest.mark.torch
def test_scan_and_prune_agree_on_an_exported_encoder(tmp_path):
    from redaudit.prune import find_candidates

    path = tmp_path / "encoder.onnx"
    _export_tiny_encoder(path)
    model = onnx.load(str(path))
    index = GraphIndex.build(model)
    taps = [point.tensor for point in select_taps(index, "block").points]
    layers = [block.name for block in find_candidates(model, index) if block.kind == "transformer-layer"]
    assert len(layers) == 3 and taps[1:] == layers
