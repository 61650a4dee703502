"""What a scan costs next to the inference it wraps, on CPU or GPU, side by side in one run.

Issue 11's protocol: torchvision-layout ResNets (plain torch, random weights with BN statistics),
224², probe samples in host memory, batches of 256, the same session options on both sides
(sessions from redaudit's SessionFactory), median of interleaved runs.

* streaming part: batches in → similarity out, i.e. the scan minus model load, tap selection,
  augmentation and session creation (``timings["streaming_s"]`` of a scan on a prepared model
  whose session exists) ÷ plain onnxruntime inference of the same batches on a warm session;
* end to end (``--end-to-end``): ``redaudit.scan(path)`` from the file, session creation
  included, ÷ plain session creation + inference;
* the scan's own stage times (load, taps, augment, session) reported separately.

Usage:
  python benchmarks/streaming_overhead.py --device cpu --models resnet18 --samples 2560
  python benchmarks/streaming_overhead.py --device cuda --backend cupy --models resnet18 resnet50 \
      --samples 2560 --end-to-end 10240
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redaudit  # noqa: E402
from redaudit.core.engine import scan_prepared  # noqa: E402
from redaudit.core.prepared import PreparedModel  # noqa: E402
from redaudit.core.run import BatchRunner, SessionFactory  # noqa: E402
from redaudit.core.spec import ScanSpec  # noqa: E402
from resnet import export_resnet18, export_resnet50  # noqa: E402

CACHE = Path(__file__).resolve().parent.parent / ".bench-cache"
EXPORTS = {"resnet18": export_resnet18, "resnet50": export_resnet50}
BATCH = 256


def plain_seconds(session, inputs: np.ndarray) -> float:
    runner = BatchRunner(session)
    begin = time.perf_counter()
    for start in range(0, len(inputs) - BATCH + 1, BATCH):
        runner.run({"input": inputs[start:start + BATCH]})
    return time.perf_counter() - begin


def measure(name: str, args: argparse.Namespace) -> dict:
    path = EXPORTS[name](CACHE / f"{name}_{args.image_size}.onnx", args.image_size)
    inputs = np.random.default_rng(0).standard_normal((args.samples, 3, args.image_size, args.image_size),
                                                      dtype=np.float32)
    factory = SessionFactory(args.device)
    plain_session, provider = factory.create(path.read_bytes())
    plain_session.run(None, {"input": inputs[:BATCH]})  # warm-up, as the scan's first batch is not timed apart
    spec = ScanSpec(samples=args.samples, device=args.device, backend=args.backend)
    prepared = PreparedModel.load(path, device=args.device)
    first = scan_prepared(prepared, spec, inputs={"input": inputs})  # creates and warms the tapped session
    plain, streaming = [], []
    for _ in range(args.repeats):  # interleaved: machine drift hits both alike
        plain.append(plain_seconds(plain_session, inputs))
        streaming.append(scan_prepared(prepared, spec, inputs={"input": inputs}).timings["streaming_s"])
    row = {"model": name, "device": args.device, "provider": provider, "backend": first.backend,
           "samples": args.samples, "irs": len(first.layers), "plain_s": statistics.median(plain),
           "streaming_s": statistics.median(streaming),
           "stages_s": {key: round(first.timings[key], 3) for key in ("taps_s", "augment_s", "session_s")}}
    row["streaming_ratio"] = row["streaming_s"] / row["plain_s"]
    if args.end_to_end:
        row.update(end_to_end(path, factory, args))
    return row


def end_to_end(path: Path, factory: SessionFactory, args: argparse.Namespace) -> dict:
    count = args.end_to_end
    inputs = np.random.default_rng(1).standard_normal((count, 3, args.image_size, args.image_size), dtype=np.float32)
    plain, scans, loads = [], [], []
    for _ in range(args.repeats):
        begin = time.perf_counter()
        session, _ = factory.create(path.read_bytes())
        plain_seconds(session, inputs)
        plain.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        result = redaudit.scan(str(path), inputs={"input": inputs}, samples=count, device=args.device,
                               backend=args.backend)
        scans.append(time.perf_counter() - begin)
        loads.append(result.timings["load_s"])
    return {"e2e_samples": count, "e2e_plain_s": statistics.median(plain), "e2e_scan_s": statistics.median(scans),
            "e2e_ratio": statistics.median(scans) / statistics.median(plain), "load_s": statistics.median(loads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--models", nargs="+", default=["resnet18"], choices=sorted(EXPORTS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=2560)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--end-to-end", type=int, default=0, metavar="SAMPLES")
    args = parser.parse_args()
    for name in args.models:
        row = measure(name, args)
        print(f"{name} {args.image_size}², {row['samples']} samples, {row['irs']} IRs, {row['provider']} + "
              f"{row['backend']}: plain {row['plain_s']:.3f} s, streaming {row['streaming_s']:.3f} s, "
              f"ratio {row['streaming_ratio']:.3f}; stages {row['stages_s']}")
        if "e2e_ratio" in row:
            print(f"  end to end, {row['e2e_samples']} samples: plain {row['e2e_plain_s']:.3f} s, scan "
                  f"{row['e2e_scan_s']:.3f} s (load {row['load_s']:.3f} s), ratio {row['e2e_ratio']:.3f}")
        print(json.dumps(row))


if __name__ == "__main__":
    main()
