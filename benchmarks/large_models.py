"""Large models, measured side by side with plain onnxruntime in one run (issue 21).

Sections (``--sections``, comma-separated; each adds its own function to ``SECTIONS``):

* ``decoder``: a Llama-layout decoder with random weights (12 layers, hidden 2048, 672 M
  parameters: 2.5 GB of external data beside a small model.onnx), exported once with
  ``torch.onnx.export(dynamo=False, opset 17, external_data=True)`` and cached. Then, each in a
  fresh process and interleaved (so drift in the machine's load hits both alike): plain
  onnxruntime, ``InferenceSession(path)`` and a run of the probe batches; and ``redaudit scan``
  with its defaults on the same inputs. Printed: peak RSS (the child's own ``ru_maxrss``, from
  ``os.wait4``) and wall time of each process, and the ratios. Targets: RSS ≤ 1.3× plain, time
  ≤ 1.3× plain inference of the same samples.
* ``prune``: ``redaudit prune --remove 2 --heal linear --no-latency`` on the same decoder and
  inputs beside plain onnxruntime: peak RSS ratio (target ≤ 1.3), the output's files, and the
  agreement plain onnxruntime measures between the two files against the one prune measured on
  its in-memory result.

* ``resnet50``: a ResNet-50 layout (bottleneck blocks 3-4-6-3, random weights, plain torch) at
  224², paper defaults (2,560 samples, CKA batch 256). Before micro-batching this was refused:
  256 images at once need ~13.6 GB of activations. The scan runs in a fresh process (peak RSS
  from VmHWM, which exec resets); its matrix is compared with a float64 per-pair reference
  (block outputs exposed by hand, plain onnxruntime, pooled chunk by chunk in float64 over all the
  scan's samples; benchmarks/reference.py), itself in a fresh process with its own peak RSS (bounded
  by ``--reference-chunk``: the raw block outputs of 2,560 samples would be 57 GB).
  Targets: the scan succeeds with peak RSS <= 4 GB; max |scan - reference| <= 1e-6.

Usage: python benchmarks/large_models.py [--sections decoder,prune,resnet50] [--cache DIR] [--repeats 2]
       [--resnet-samples 2560] [--image-size 224] [--reference-chunk 32]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench-cache"

#: The decoder of the issue: hidden 2048, 12 layers, MLP 4608, vocab 32000, untied head.
DECODER = {"hidden_size": 2048, "intermediate_size": 4608, "num_hidden_layers": 12, "num_attention_heads": 16,
           "num_key_value_heads": 16, "vocab_size": 32000, "tie_word_embeddings": False,
           "max_position_embeddings": 512}

_EXPORT = """
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
config = LlamaConfig(**{config}, use_cache=False, attn_implementation="eager")
torch.manual_seed(0)
model = LlamaForCausalLM(config).eval()


class Logits(torch.nn.Module):  # (input_ids, attention_mask) -> logits: no logits_to_keep input
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits


ids = torch.ones((2, 8), dtype=torch.int64)
with torch.no_grad():
    torch.onnx.export(Logits(model), (ids, torch.ones_like(ids)), {path!r}, dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes={{"input_ids": {{0: "batch", 1: "sequence"}},
                                    "attention_mask": {{0: "batch", 1: "sequence"}},
                                    "logits": {{0: "batch", 1: "sequence"}}}}, external_data=True)
"""

_PLAIN = """
import json, sys, time
import numpy as np, onnxruntime as ort
path, inputs, batch = sys.argv[1], np.load(sys.argv[2]), int(sys.argv[3])
begin = time.perf_counter()
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
loaded = time.perf_counter()
count = len(inputs["input_ids"])
for start in range(0, count, batch):
    session.run(None, {name: inputs[name][start:start + batch] for name in inputs.files})
print(json.dumps({"session_s": loaded - begin, "run_s": time.perf_counter() - loaded}))
"""


def export_decoder(cache: Path) -> Path:
    """The cached export (about 2 minutes and 4.2 GB RSS the first time, in a child process)."""
    folder = cache / "llama_decoder_h2048_l12"
    path = folder / "model.onnx"
    if path.is_file():
        return path
    partial = cache / f"llama_decoder.partial.{os.getpid()}"
    partial.mkdir(parents=True, exist_ok=True)
    code = _EXPORT.format(config=repr(DECODER), path=str(partial / "model.onnx"))
    print("exporting the decoder (once; cached under", folder, ")", flush=True)
    subprocess.run([sys.executable, "-c", code], check=True)
    os.replace(partial, folder)
    return path


def measured(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in GB, stdout) of one child process (its own ru_maxrss)."""
    begin = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[:4]} failed with exit code {process.returncode}")
    return time.perf_counter() - begin, usage.ru_maxrss * 1024 / 1e9, output


def decoder(args: argparse.Namespace) -> None:
    path = export_decoder(args.cache)
    data = sum(f.stat().st_size for f in path.parent.iterdir())
    rng = np.random.default_rng(0)
    ids = rng.integers(0, DECODER["vocab_size"], (args.samples, args.tokens), dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="redaudit-bench-") as folder:
        inputs = Path(folder) / "inputs.npz"
        np.savez(inputs, input_ids=ids, attention_mask=np.ones_like(ids))
        report = Path(folder) / "scan.json"
        plain_cmd = [sys.executable, "-c", _PLAIN, str(path), str(inputs), str(args.cka_batch)]
        scan_cmd = [sys.executable, "-c", "from redaudit.cli.main import main; main()", "scan", str(path),
                    "--inputs", str(inputs), "--samples", str(args.samples), "--cka-batch", str(args.cka_batch),
                    "--device", "cpu", "--json", str(report), "--quiet"]
        plain, scans, timings = [], [], {}
        for _ in range(args.repeats):
            plain.append(measured(plain_cmd))
            scans.append(measured(scan_cmd))
            timings = json.loads(report.read_text())["timings"]
    load = os.getloadavg()
    best_plain = min(plain, key=lambda m: m[0])
    best_scan = min(scans, key=lambda m: m[0])
    peak_plain, peak_scan = max(m[1] for m in plain), max(m[1] for m in scans)
    print(f"decoder: Llama layout, 12 layers, hidden 2048, {data / 1e9:.2f} GB on disk; "
          f"{args.samples} samples x {args.tokens} tokens, batches of {args.cka_batch}; "
          f"load average {load[0]:.1f} on {os.cpu_count()} cores")
    for name, runs in (("plain onnxruntime", plain), ("redaudit scan", scans)):
        print(f"  {name:18}: " + ", ".join(f"{wall:6.1f} s {rss:5.2f} GB" for wall, rss, _ in runs))
    print(f"  plain in-process  : {best_plain[2].strip()}")
    print("  scan stages       : " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"  peak RSS ratio    : {peak_scan / peak_plain:6.3f}  ({peak_scan:.2f} / {peak_plain:.2f} GB; target <= 1.3)")
    print(f"  time ratio        : {best_scan[0] / best_plain[0]:6.3f}  (best of {args.repeats}; target <= 1.3)")
    print(json.dumps({"decoder_rss_ratio": peak_scan / peak_plain, "decoder_time_ratio": best_scan[0] / best_plain[0]}))


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


_REFERENCE = """
import json, sys, time
sys.path[:0] = [{root!r}, {benchmarks!r}]
import numpy as np, onnx
import redaudit
from redaudit.core.probe import make_probe
from reference import pooled_outputs, reference_matrix
begin = time.perf_counter()
specs = redaudit.prepare({path!r}, device="cpu").input_specs  # the scan's probe: same specs, seed, samples
spec = redaudit.ScanSpec(samples={samples}, cka_batch={batch}, device="cpu", backend="numpy")
probe = make_probe(specs, None, {samples}, spec.seed, spec.dims_dict, spec.int_range)
features = pooled_outputs(onnx.load({path!r}), {layers!r}, probe.batches({batch}, {samples}), chunk={chunk})
np.save({out!r}, reference_matrix(features, {batch}))
peak = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({{"peak": peak, "seconds": time.perf_counter() - begin}}))
"""


def reference_in_fresh_process(path: Path, layers: list[str], samples: int, batch: int, out: Path,
                               chunk: int) -> dict:
    """The float64 per-pair reference matrix (benchmarks/reference.py: block outputs exposed by
    hand, plain onnxruntime, pooled chunk by chunk in float64) of the scan's own probe samples,
    in a fresh process so that its peak RSS is its own: bounded by ``chunk``, not by ``samples``."""
    code = _REFERENCE.format(root=str(ROOT), benchmarks=str(ROOT / "benchmarks"), path=str(path), samples=samples,
                             batch=batch, layers=layers, out=str(out), chunk=chunk)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the reference failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def resnet50(args: argparse.Namespace) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    import redaudit
    from redaudit.core.memory import estimate_scan_memory, format_bytes
    from resnet import export_resnet50

    load_before = os.getloadavg()
    path = export_resnet50(args.cache / f"resnet50_{args.image_size}.onnx", args.image_size)
    prepared = redaudit.prepare(str(path), device="cpu")
    spec = redaudit.ScanSpec(samples=args.resnet_samples, cka_batch=args.resnet_cka_batch, device="cpu", backend="numpy")
    whole = estimate_scan_memory(prepared, spec.with_options(max_memory_bytes=1024 * GIB), available=1024 * GIB)
    chosen = estimate_scan_memory(prepared, spec)
    print(f"ResNet-50 layout {args.image_size}x{args.image_size}, {args.resnet_samples} samples, CKA batch {args.resnet_cka_batch}, "
          f"model {path.stat().st_size / 2**20:.0f} MiB")
    at_once = whole.parts["activations"] // whole.run_batch * args.resnet_cka_batch  # the CKA batch as one run
    print(f"  estimate, the CKA batch as one onnxruntime run (before micro-batching): activations "
          f"{format_bytes(at_once)}, scan {format_bytes(whole.scan_bytes - whole.parts['activations'] + at_once)}")
    print(f"  estimate, micro-batch {chosen.run_batch} (budget {format_bytes(chosen.budget or 0)}): activations "
          f"{format_bytes(chosen.parts['activations'])}, scan {format_bytes(chosen.scan_bytes)}")
    del prepared  # the scan and the reference each load the model in their own process
    matrix_path = args.cache / "resnet50_similarity.npy"
    found = scan_in_fresh_process(path, args.resnet_samples, args.resnet_cka_batch, matrix_path)
    similarity = np.load(matrix_path)
    print(f"  scan (fresh process): {found['seconds']:.1f} s (onnxruntime {found['run_s']:.1f} s), micro-batch "
          f"{found['micro_batch']}, {len(found['layers'])} block IRs, MSRS {found['msrs']:.4f}, "
          f"peak RSS {found['peak'] / GIB:.2f} GiB (target <= 4 GB)", flush=True)
    load_between = os.getloadavg()
    print(f"  load average after the scan {load_between[0]:.1f} (1 min)", flush=True)
    reference_path = args.cache / "resnet50_reference.npy"
    reference = reference_in_fresh_process(path, found["layers"], found["samples"], args.resnet_cka_batch,
                                           reference_path, args.reference_chunk)
    expected = np.load(reference_path)
    error = float(np.nanmax(np.abs(similarity - expected)))
    print(f"  float64 per-pair reference ({found['samples']} samples, chunks of {args.reference_chunk}, fresh "
          f"process): {reference['seconds']:.1f} s, peak RSS {reference['peak'] / GIB:.2f} GiB; "
          f"max |scan - reference| = {error:.2e} (target <= 1e-6)")
    load_after = os.getloadavg()
    print(f"  load average before {load_before[0]:.1f}, after the scan {load_between[0]:.1f}, after "
          f"{load_after[0]:.1f} (1 min); {os.cpu_count()} cores")
    print(json.dumps({"section": "resnet50", "samples": found["samples"], "peak_rss_gib": found["peak"] / GIB,
                      "micro_batch": found["micro_batch"], "max_abs_error": error, "scan_s": found["seconds"],
                      "reference_s": reference["seconds"], "reference_peak_rss_gib": reference["peak"] / GIB,
                      "load_before": load_before[0], "load_between": load_between[0], "load_after": load_after[0]}))



_AGREEMENT = """
import json, sys
import numpy as np, onnxruntime as ort
original, pruned, inputs, batch = sys.argv[1], sys.argv[2], np.load(sys.argv[3]), int(sys.argv[4])
def outputs(path):  # plain onnxruntime by path, one session at a time
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    count = len(inputs["input_ids"])
    parts = [session.run(None, {n: inputs[n][s:s + batch] for n in inputs.files})[0] for s in range(0, count, batch)]
    return np.concatenate(parts).astype(np.float64).reshape(count, -1)
ref = outputs(original)
new = outputs(pruned)
cos = np.einsum("ij,ij->i", ref, new) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(new, axis=1))
print(json.dumps({"cosine_mean": float(cos.mean()), "max_abs_error": float(np.abs(new - ref).max())}))
"""


def prune(args: argparse.Namespace) -> None:
    """``redaudit prune --remove 2 --heal linear`` on the decoder beside plain onnxruntime on the same
    inputs: peak RSS (target <= 1.3x plain), the output's layout, and plain onnxruntime's agreement
    between the two files against the agreement prune measured on its in-memory pruned model.
    ``--no-latency``: the latency stage holds both models' sessions by design (alternating runs)."""
    path = export_decoder(args.cache)
    ids = np.random.default_rng(0).integers(0, DECODER["vocab_size"], (args.samples, args.tokens), dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="redaudit-bench-prune-") as folder:
        inputs, out = Path(folder) / "inputs.npz", Path(folder) / "pruned" / "model.onnx"
        np.savez(inputs, input_ids=ids, attention_mask=np.ones_like(ids))
        plain = measured([sys.executable, "-c", _PLAIN, str(path), str(inputs), str(args.cka_batch)])
        pruned = measured([sys.executable, "-c", "from redaudit.cli.main import main; main()", "prune", str(path),
                           "--remove", "2", "--heal", "linear", "--inputs", str(inputs), "--samples", str(args.samples),
                           "--cka-batch", str(args.cka_batch), "--device", "cpu", "--no-latency", "--json",
                           "-o", str(out)])
        report = json.loads(pruned[2])
        layout = {file.name: file.stat().st_size for file in out.parent.iterdir()}
        check = json.loads(measured([sys.executable, "-c", _AGREEMENT, str(path), str(out), str(inputs),
                                     str(args.cka_batch)])[2])
    load = os.getloadavg()
    memory = report["agreement"][0]
    print(f"prune: --remove 2 --heal linear on the decoder, {args.samples} samples x {args.tokens} tokens; "
          f"load average {load[0]:.1f} on {os.cpu_count()} cores")
    print(f"  plain onnxruntime : {plain[0]:6.1f} s {plain[1]:5.2f} GB")
    print(f"  redaudit prune    : {pruned[0]:6.1f} s {pruned[1]:5.2f} GB  removed {', '.join(report['removed'])}")
    print(f"  peak RSS ratio    : {pruned[1] / plain[1]:6.3f}  (target <= 1.3)")
    print("  output            : " + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sorted(layout.items())))
    print(f"  agreement         : in memory cosine {memory['cosine_mean']:.6f} max|d| {memory['max_abs_error']:.4g}; "
          f"written file (plain onnxruntime) cosine {check['cosine_mean']:.6f} max|d| {check['max_abs_error']:.4g}")
    print(json.dumps({"prune_rss_ratio": pruned[1] / plain[1],
                      "prune_cosine_difference": abs(check["cosine_mean"] - memory["cosine_mean"])}))


SECTIONS: dict[str, Callable[[argparse.Namespace], None]] = {"decoder": decoder, "prune": prune, "resnet50": resnet50}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where generated models are kept")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--cka-batch", type=int, default=32)
    parser.add_argument("--resnet-samples", type=int, default=2560, help="resnet50: probe samples (paper: 2,560)")
    parser.add_argument("--resnet-cka-batch", type=int, default=256, help="resnet50: CKA batch (paper: 256)")
    parser.add_argument("--image-size", type=int, default=224, help="resnet50: image side")
    parser.add_argument("--reference-chunk", type=int, default=32,
                        help="resnet50: samples per onnxruntime run of the reference (bounds its memory)")
    args = parser.parse_args()
    unknown = [name for name in args.sections.split(",") if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    for name in args.sections.split(","):
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
