"""Real probe inputs for magika's content-type model: byte features of real files on this machine.

magika's model reads, per file, the first and last `beg_size`/`end_size` bytes of its first and
last `block_size` bytes, with leading/trailing whitespace stripped and `padding_token` filling the
rest (config.min.json beside the model). We rebuild that from the config, over files that installed
Python packages ship (source, binaries, data, docs), sorted so the sample is reproducible.

Usage: python examples/magika_inputs.py OUT.npz [--samples 2560] [--root DIR]
"""
from __future__ import annotations

import argparse
import json
import site
import sys
from pathlib import Path

import numpy as np


def model_dir() -> Path:
    import magika

    return Path(magika.__file__).parent / "models" / "standard_v3_3"


def features(path: Path, config: dict) -> np.ndarray | None:
    block, pad = config["block_size"], config["padding_token"]
    beg_size, end_size = config["beg_size"], config["end_size"]
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            if size < config["min_file_size_for_dl"]:
                return None
            handle.seek(0)
            head = handle.read(min(block, size)).lstrip()
            handle.seek(max(0, size - block))
            tail = handle.read(min(block, size)).rstrip()
    except OSError:
        return None
    beg = list(head[:beg_size]) + [pad] * max(0, beg_size - len(head))
    end = [pad] * max(0, end_size - len(tail)) + list(tail[-end_size:] if end_size else b"")
    return np.array(beg + end, dtype=np.int32)


def collect(root: Path, samples: int, config: dict) -> np.ndarray:
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        row = features(path, config)
        if row is not None:
            rows.append(row)
        if len(rows) == samples:
            break
    return np.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--samples", type=int, default=2560)
    parser.add_argument("--root", type=Path, default=Path(site.getsitepackages()[0]))
    args = parser.parse_args()
    config = json.loads((model_dir() / "config.min.json").read_text())
    data = collect(args.root, args.samples, config)
    if len(data) < args.samples:
        print(f"only {len(data)} files found under {args.root}", file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, bytes=data)
    print(f"wrote {args.out}: {data.shape[0]} real files × {data.shape[1]} byte features from {args.root}")


if __name__ == "__main__":
    main()
