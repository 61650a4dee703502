"""Tiny Llama-layout decoders exported in the tests (transformers + torch.onnx, random weights),
with and without a KV cache, optionally with one layer made the identity.

A layer whose attention output projection (``o_proj``) and MLP down projection (``down_proj``)
are zero adds exactly 0 to the residual stream in both halves: removing it must leave the
logits unchanged (up to float reassociation, which an added 0 does not cause).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

VOCAB = 64


def export_tiny_decoder(folder: Path, *, layers: int = 4, identity_layer: int | None = None,
                        kv_heads: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """(no-cache export, KV-cache export) of one random-weight tiny decoder."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import LlamaConfig, LlamaForCausalLM

    from examples.train_tiny_lm import export

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
                         attn_implementation="eager")
    model = LlamaForCausalLM(config).eval()
    if identity_layer is not None:
        layer = model.model.layers[identity_layer]
        with torch.no_grad():
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    folder.mkdir(parents=True, exist_ok=True)
    plain, cached = folder / "decoder.onnx", folder / "decoder-kv.onnx"
    export(model, plain, with_cache=False)
    export(model, cached, with_cache=True)
    return plain, cached


def token_probe(count: int = 6, length: int = 12, seed: int = 1, pad_last: int = 0) -> dict[str, np.ndarray]:
    """Token ids in the vocabulary, right padding on the last ``pad_last`` positions of odd samples."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (count, length)).astype(np.int64)
    mask = np.ones_like(ids)
    if pad_last:
        mask[1::2, -pad_last:] = 0
        ids[1::2, -pad_last:] = 0
    positions = np.broadcast_to(np.arange(length, dtype=np.int64), ids.shape).copy()
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def empty_past(model_path: Path, count: int) -> dict[str, np.ndarray]:
    """Zero-length past key/values for every ``past_key_values.*`` input of ``model_path``."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    past = {}
    for graph_input in model.graph.input:
        if graph_input.name.startswith("past_key_values."):
            dims = graph_input.type.tensor_type.shape.dim
            past[graph_input.name] = np.zeros((count, dims[1].dim_value, 0, dims[3].dim_value), np.float32)
    return past
