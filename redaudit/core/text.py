"""Probe inputs from real text: a text file tokenized with a local ``tokenizer.json``.

A language model measured on random token ids measures a model nobody runs; the user's own
text, cut into windows of the model's sequence length, is the probe ShortGPT and its kin use.
The ``tokenizers`` package (the ``lm`` extra) reads any Hugging Face ``tokenizer.json`` without
the network. The windows are consecutive and full (no padding); the mask, positions and an
empty past are added as for any token ids (:func:`redaudit.core.lm_values.complete_arrays`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from redaudit.core.lm_inputs import TOKEN_IDS
from redaudit.errors import ConfigError, ProbeInputError

#: Tokens per window when the model's sequence axis is symbolic and --dim does not set it.
DEFAULT_TEXT_LENGTH = 64
#: Largest text file read (bytes): far more than any probe needs, and bounded memory.
MAX_TEXT_BYTES = 256 * 1024**2


def _tokenizer(folder: str) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError("--text needs the tokenizers package: pip install 'redaudit[lm]'") from None
    path = Path(folder)
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"--tokenizer {folder}: no tokenizer.json there; pass the folder of a Hugging Face "
                          "tokenizer (or the tokenizer.json itself)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad file
        raise ConfigError(f"--tokenizer {path}: not a tokenizer file tokenizers can read ({error})") from None
    # A model's tokenizer.json often truncates (sentence-transformers': 128 tokens) or pads; the
    # whole text is wanted here, cut into windows afterwards.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def text_arrays(text: str | os.PathLike[str], tokenizer: str, specs: list, samples: int,
                dims: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Token ids (samples, T) from consecutive windows of the tokenized ``text``: T is the
    token input's fixed length, its ``--dim``, or :data:`DEFAULT_TEXT_LENGTH`."""
    token = next((spec for spec in specs if spec.role == TOKEN_IDS), None)
    if token is None or len(token.shape) != 2:
        raise ProbeInputError("--text needs a language model with a (batch, sequence) token-id input "
                              "(input_ids); this model has none — pass its inputs with --inputs")
    dim = token.shape[1]
    key = dim if isinstance(dim, str) else f"{token.name}:1"
    length = dim if isinstance(dim, int) and dim > 0 else dims.get(key, DEFAULT_TEXT_LENGTH)
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"--text {text}: no such file")
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise ConfigError(f"--text {text} is larger than {MAX_TEXT_BYTES // 1024**2} MiB; pass an excerpt")
    content = path.read_text(encoding="utf-8", errors="replace")
    ids = np.asarray(_tokenizer(tokenizer).encode(content, add_special_tokens=False).ids, dtype=np.int64)
    windows = min(samples, ids.size // length) if length else 0
    if windows == 0:
        raise ProbeInputError(f"--text {text} holds {ids.size} tokens, fewer than one sequence of {length}; "
                              f"pass more text or a shorter --dim {key}")
    return {token.name: ids[:windows * length].reshape(windows, length).astype(token.dtype)}


def probe_source(spec: Any, specs: list, inputs: Mapping[str, np.ndarray] | None) -> Any:
    """What a probe is built from: in-memory arrays, else ``--text`` windows, else the ``--inputs`` path (or None)."""
    if inputs is not None:
        return inputs
    if getattr(spec, "text", None):
        return text_arrays(spec.text, spec.tokenizer, specs, spec.samples, spec.dims_dict)
    return spec.inputs
