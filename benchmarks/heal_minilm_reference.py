"""An independent reference for MiniLM-L6 linear healing: transformers + NumPy float64, no onnx.

Run: python benchmarks/heal_minilm_reference.py [--layers 0,1,2,3] [--calib-source readme|docstrings]

Replaces one encoder layer by ``y = x·T + b`` fitted on the hidden states (x = the layer's
input, y = its output, i.e. its output LayerNorm), rows = real tokens only (attention mask),
ridge toward the identity with a free bias, and prints the mean embedding cosine (mean pooling
with the mask) on the evaluation sentences for several λ — the same quantities
``prune_compare.py`` measures through onnxruntime and the library, computed another way. It is
how docs/prune.md's "Why our single-layer figures…" paragraph was checked.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="0,1,2,3")
    parser.add_argument("--calib-source", choices=("readme", "docstrings"), default="readme")
    parser.add_argument("--lambdas", default="1e-6,1e-2,1e-1")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoTokenizer

    from benchmarks.sentence_sets import disjoint_sets, docstring_sentences
    from examples.minilm_export import model_dir

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    encoder = AutoModel.from_pretrained(str(model_dir())).eval()
    calibration, evaluation = disjoint_sets(512, 400, source="readme")
    if args.calib_source == "docstrings":  # same evaluation sentences, other calibration text
        calibration = docstring_sentences(limit=512)

    def encode(sentences: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for start in range(0, len(sentences), 32):
            encoded = tokenizer(sentences[start:start + 32], padding="longest", truncation=True, max_length=64,
                                return_tensors="pt")
            out.append((encoded["input_ids"], encoded["attention_mask"]))
        return out

    class Affine(torch.nn.Module):
        def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
            super().__init__()
            self.weight = torch.tensor(weight, dtype=torch.float32)
            self.bias = torch.tensor(bias, dtype=torch.float32)

        def forward(self, hidden: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            return hidden @ self.weight + self.bias

    @torch.no_grad()
    def embed(batches, replace: dict[int, torch.nn.Module] | None = None) -> np.ndarray:
        layers = list(encoder.encoder.layer)
        encoder.encoder.layer = torch.nn.ModuleList([(replace or {}).get(i, layer) for i, layer in enumerate(layers)])
        try:
            pooled = []
            for ids, mask in batches:
                hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled.append(((hidden * weights).sum(1) / weights.sum(1)).double().numpy())
            return np.concatenate(pooled)
        finally:
            encoder.encoder.layer = torch.nn.ModuleList(layers)

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))

    calib_batches, eval_batches = encode(calibration), encode(evaluation)
    reference = embed(eval_batches)
    with torch.no_grad():
        states = [(encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states, mask.bool())
                  for ids, mask in calib_batches]
    print(f"calibration: {len(calibration)} {args.calib_source} sentences, "
          f"{sum(int(m.sum()) for _, m in calib_batches)} tokens; evaluation: {len(evaluation)} README sentences")
    for layer in map(int, args.layers.split(",")):
        x = np.concatenate([h[layer][m].double().numpy() for h, m in states])
        y = np.concatenate([h[layer + 1][m].double().numpy() for h, m in states])
        design = np.hstack([x, np.ones((len(x), 1))])
        gram, cross, width = design.T @ design, design.T @ y, x.shape[1]
        results = []
        for lam in map(float, args.lambdas.split(",")):
            alpha = lam * np.trace(gram[:width, :width]) / width
            lhs, rhs = gram.copy(), cross.copy()
            lhs[np.arange(width), np.arange(width)] += alpha
            rhs[:width] += alpha * np.eye(width)
            theta = np.linalg.solve(lhs, rhs)
            results.append(f"λ={lam:g}: {cosine(reference, embed(eval_batches, {layer: Affine(theta[:-1], theta[-1])})):.4f}")
        removed = cosine(reference, embed(eval_batches, {layer: Affine(np.eye(width), np.zeros(width))}))
        print(f"layer {layer}: removed {removed:.4f}; healed " + ", ".join(results), flush=True)


if __name__ == "__main__":
    main()
