"""Write the seed corpora: the generated test models (valid and hostile) and .npz archives.

``python fuzz/seeds.py fuzz/corpus`` fills ``fuzz/corpus/model`` and ``fuzz/corpus/npz``; the
corpora are generated, never committed.
"""
from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "hostile")]

import builders  # noqa: E402
import npz_builders  # noqa: E402
import models  # noqa: E402

SMALL = 1024 * 1024  # seeds above this slow the fuzzer down for nothing


def model_seeds() -> dict[str, bytes]:
    seeds = {"tiny_mlp": builders.tiny_mlp().SerializeToString(),
             "tiny_mlp_batch3": builders.tiny_mlp(batch=3).SerializeToString(),
             "residual_cnn": models.residual_cnn(blocks=2, channels=4, size=4).SerializeToString(),
             "mlp_copy": models.mlp(scaled_copy=True, constant_layer=True).SerializeToString()}
    for table in (builders.REFUSED_MODELS, builders.ODD_MODELS):
        for name, build in table.items():
            with tempfile.TemporaryDirectory() as folder:
                try:
                    path = build(Path(folder))
                    data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
                except OSError:
                    continue
            if data and len(data) <= SMALL:
                seeds[name] = data
    return seeds


def npz_seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    seeds = {"good": npz_builders.npz_bytes(x=rng.standard_normal((64, 8)).astype(np.float32),
                                        ids=rng.integers(0, 9, (64, 4))),
             "small": npz_builders.npz_bytes(x=np.ones((2, 8), np.float32), ids=np.zeros((2, 4), np.int64))}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.ones((5, 8), np.float32), ids=np.zeros((5, 4), np.int64))
    seeds["compressed"] = buffer.getvalue()
    seeds["bomb_small"] = npz_builders.zip_bomb(8 * 1024**2)
    for table in (npz_builders.REFUSED_NPZ,):
        for name, build in table.items():
            if "bomb" in name:
                continue
            with tempfile.TemporaryDirectory() as folder:
                path = build(Path(folder))
                if not path.is_file() or path.is_symlink():  # a FIFO or /dev/zero: nothing to seed
                    continue
                data = path.read_bytes()
            if len(data) <= SMALL:
                seeds[name] = data
    return seeds


def main(target: str) -> None:
    for kind, seeds in (("model", model_seeds()), ("npz", npz_seeds())):
        folder = Path(target) / kind
        folder.mkdir(parents=True, exist_ok=True)
        for index, (name, data) in enumerate(sorted(seeds.items())):
            (folder / f"seed-{index:03d}").write_bytes(data)
        print(f"{len(seeds)} {kind} seeds in {folder}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus")
