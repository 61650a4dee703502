"""Large models (issue 21), measured: each section builds its model in code, scans it in a fresh
process (peak RSS from VmHWM, which exec resets) and checks the numbers against an independent
reference. Figures and the machine's load average go into the issue's note.

Sections:
  resnet50  ResNet-50 layout (bottleneck blocks 3-4-6-3, random weights) at 224², paper defaults
            (2,560 samples, CKA batch 256). Before micro-batching this was refused: 256 images at
            once need ~13.6 GB of activations. Targets: the scan succeeds with peak RSS <= 4 GB and
            its similarity matrix equals a float64 per-pair reference within 1e-6.

Usage: python benchmarks/large_models.py --sections resnet50 [--samples 2560] [--image-size 224]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CACHE = ROOT / ".bench-cache"
GIB = 1024**3

_SCAN = """
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np
import redaudit
begin = time.perf_counter()
result = redaudit.scan({path!r}, samples={samples}, cka_batch={batch}, device="cpu", backend="numpy")
seconds = time.perf_counter() - begin
np.save({out!r}, result.similarity)
peak = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({{"peak": peak, "seconds": seconds, "micro_batch": result.micro_batch, "msrs": result.msrs,
                  "layers": result.layer_names, "samples": result.samples, "warnings": result.warnings,
                  "run_s": result.timings.get("run_s")}}))
"""


def scan_in_fresh_process(path: Path, samples: int, batch: int, out: Path) -> dict:
    code = _SCAN.format(root=str(ROOT), path=str(path), samples=samples, batch=batch, out=str(out))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the scan failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pooled_reference_features(path: Path, names: list[str], batches, chunk: int = 64) -> list[np.ndarray]:
    """Block outputs exposed by hand, run by plain onnxruntime in chunks, pooled over H×W in
    float64 (nothing of redaudit's pipeline but the probe generator, so the inputs are the scan's)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    present = {output.name for output in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in names if name not in present)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    del model
    pooled: list[list[np.ndarray]] = [[] for _ in names]
    for batch in batches:
        images = batch["input"]
        for start in range(0, len(images), chunk):
            outputs = session.run(names, {"input": images[start:start + chunk]})
            for i, output in enumerate(outputs):
                pooled[i].append(output.mean(axis=(2, 3), dtype=np.float64))
    return [np.concatenate(parts) for parts in pooled]


def resnet50(args: argparse.Namespace) -> None:
    import redaudit
    from redaudit.core.memory import estimate_scan_memory, format_bytes
    from redaudit.core.probe import make_probe
    from reference import reference_matrix
    from resnet import export_resnet50

    load_before = os.getloadavg()
    path = export_resnet50(CACHE / f"resnet50_{args.image_size}.onnx", args.image_size)
    prepared = redaudit.prepare(str(path), device="cpu")
    spec = redaudit.ScanSpec(samples=args.samples, cka_batch=args.cka_batch, device="cpu", backend="numpy")
    whole = estimate_scan_memory(prepared, spec.with_options(max_memory_bytes=1024 * GIB), available=1024 * GIB)
    chosen = estimate_scan_memory(prepared, spec)
    print(f"ResNet-50 layout {args.image_size}x{args.image_size}, {args.samples} samples, CKA batch {args.cka_batch}, "
          f"model {path.stat().st_size / 2**20:.0f} MiB")
    at_once = whole.parts["activations"] // whole.run_batch * args.cka_batch  # the CKA batch as one run
    print(f"  estimate, the CKA batch as one onnxruntime run (before micro-batching): activations "
          f"{format_bytes(at_once)}, scan {format_bytes(whole.scan_bytes - whole.parts['activations'] + at_once)}")
    print(f"  estimate, micro-batch {chosen.run_batch} (budget {format_bytes(chosen.budget or 0)}): activations "
          f"{format_bytes(chosen.parts['activations'])}, scan {format_bytes(chosen.scan_bytes)}")
    matrix_path = CACHE / "resnet50_similarity.npy"
    found = scan_in_fresh_process(path, args.samples, args.cka_batch, matrix_path)
    similarity = np.load(matrix_path)
    print(f"  scan (fresh process): {found['seconds']:.1f} s (onnxruntime {found['run_s']:.1f} s), micro-batch "
          f"{found['micro_batch']}, {len(found['layers'])} block IRs, MSRS {found['msrs']:.4f}, "
          f"peak RSS {found['peak'] / GIB:.2f} GiB (target <= 4 GB)")
    begin = time.perf_counter()
    probe = make_probe(prepared.input_specs, None, args.samples, spec.seed, spec.dims_dict, spec.int_range)
    features = pooled_reference_features(path, found["layers"], probe.batches(args.cka_batch, found["samples"]))
    expected = reference_matrix(features, args.cka_batch)
    error = float(np.nanmax(np.abs(similarity - expected)))
    print(f"  float64 per-pair reference: {time.perf_counter() - begin:.1f} s; max |scan - reference| = {error:.2e} "
          f"(target <= 1e-6)")
    load_after = os.getloadavg()
    print(f"  load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1 min); {os.cpu_count()} cores")
    print(json.dumps({"section": "resnet50", "peak_rss_gib": found["peak"] / GIB, "micro_batch": found["micro_batch"],
                      "max_abs_error": error, "scan_s": found["seconds"], "load_before": load_before[0],
                      "load_after": load_after[0]}))


SECTIONS = {"resnet50": resnet50}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=sorted(SECTIONS))
    parser.add_argument("--samples", type=int, default=2560)
    parser.add_argument("--cka-batch", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    for name in args.sections:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
