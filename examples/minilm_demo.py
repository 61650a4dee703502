"""Build the `make demo` inputs: MiniLM-L6 as ONNX and real English passages to probe it with.

MiniLM-L6 is a pretrained transformer whose six encoder layers are residual blocks, so a block-level
scan shows one IR per layer and `redaudit prune --list` has real candidates. The probe is
``--samples`` passages of prose from the installed packages' READMEs and docstrings, each exactly
``--max-length`` tokens with no padding (see examples/minilm_export.py for why), so the
model is exported without its attention-mask input: every mask would be all ones.

Usage: python examples/minilm_demo.py OUT_DIR [--samples 2560] [--max-length 32]
Writes OUT_DIR/minilm.onnx (kept if already there) and OUT_DIR/minilm_inputs.npz.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.minilm_export import export_minilm, passage_inputs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--samples", type=int, default=2560)
    parser.add_argument("--max-length", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    inputs = passage_inputs(args.samples, args.max_length)
    # No sample has padding, so the model is exported without the attention-mask input.
    np.savez(args.out_dir / "minilm_inputs.npz", input_ids=inputs["input_ids"])
    model = args.out_dir / "minilm.onnx"
    if not model.exists():
        export_minilm(model, attention_mask=False)
    print(f"wrote {model} and {args.out_dir / 'minilm_inputs.npz'}: {len(inputs['input_ids'])} passages of real "
          f"English × {args.max_length} tokens, no padding ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
