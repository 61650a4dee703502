"""Peak memory of a scan, estimated before it runs, and the refusal when it cannot fit.

A scan's memory is set by a few products that a user controls, not by the model size alone:
``--reduce flatten`` keeps every tapped activation whole (magika: 391,000 floats per sample),
``--cka-batch all`` keeps every sample's features at once, ``--dim`` scales the probe and every
activation. The estimate is the sum of these parts, each computed from the tap shapes (shape
inference re-run with the probe's resolved dimensions and a batch of 1, so sizes are per sample):

* ``process``: what this process already holds (VmRSS: interpreter, libraries, the loaded
  model). Measured, not estimated.
* ``weights``: onnxruntime's copy of the initializers plus the proto's (and the serialised
  augmented model's) copy of those held in the proto: about 2 × the tensor bytes of a
  self-contained model, 1 × for weights kept in external data (the proto only references them).
* ``probe``: two run batches of inputs in flight (onnxruntime runs batch k+1 while CKA works on
  batch k), generated through float64/int64 (numpy's generators), so 8 bytes per element
  plus the input dtype; real ``--inputs`` add the whole array set.
* ``features``: the tapped outputs of the batch being scored, the next batch's outputs, and
  the float64 copy the CKA math makes (4 + 4 + 8 bytes per float32 element; with
  ``--cka-batch all`` every sample's features, kept then concatenated: 4 + 4 + 8 as well).
* ``gram``: the float64 Gram rows built in blocks (cka.py bounds a block to 128 MiB, twice:
  the per-layer pieces and their stack), so n² × 8 per layer only while that is smaller.
* ``activations``: onnxruntime's intermediate tensors. This is the rough part. We simulate its
  allocation planner over the augmented graph in node order (a buffer lives from its producer
  to its last consumer, graph outputs to the end, Reshape-like views share their input's
  buffer, elementwise ops reuse a dying input of the same size) and take the peak live bytes
  per sample × the run batch. From the second run on, onnxruntime adds a "memory pattern"
  block for the tensors whose shapes it can resolve from the input shapes, while its arena
  keeps the first run's chunks: measured, the arena after 2+ runs is the first run's live set
  plus that planned set (residual CNN: 1.6 GB = 0.8 + 0.8; magika: 1.06 GB = 0.81 + 0.25), so
  we add the simulated peak of the planned tensors (unless the session factory says
  ``mem_pattern = False``: without the pattern the peak is the first run's, e.g. residual CNN
  651 MiB instead of 1011 MiB for the whole scan, at the same speed). Tensors shape inference cannot size count
  as zero, so graphs with data-dependent shapes are underestimated.

The test suite checks the total against the measured peak (VmHWM of a fresh process) on two
models within 25 %; treat it as that good, no better. Device memory (CUDA) is the weights, the
activations and, with the CuPy backend, the features and Gram blocks.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from redaudit.core.augment import AugmentedModel
from redaudit.core.hostmemory import available_bytes, format_bytes  # re-exported: callers import them from here
from redaudit.core.liveness import live_peak, planned_tensors, tensor_sizes
from redaudit.core.prepared import PreparedModel
from redaudit.core.probe import check_dim_names
from redaudit.core.spec import ScanSpec
from redaudit.errors import RedauditError

#: Bytes of float64 Gram rows cka.py materialises at once (mirrors cka._GRAM_BLOCK_BYTES).
GRAM_BLOCK_BYTES = 128 * 1024**2
#: Samples per onnxruntime call when one CKA batch holds every sample (mirrors engine._RUN_CHUNK).
RUN_CHUNK = 256
#: Above this share of the available memory a scan is announced with a warning.
WARN_SHARE = 0.5
#: ... and above this absolute size, whatever the machine has.
WARN_BYTES = 2 * 1024**3


class MemoryLimitError(RedauditError):
    """The scan's estimated peak memory exceeds what the machine has available."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of one scan, host and device, and the parts they are made of."""

    host_bytes: int
    device_bytes: int
    parts: dict[str, int] = field(default_factory=dict)
    run_batch: int = 0
    cka_batch: int = 0
    unsized_tensors: int = 0  # intermediates shape inference could not size (counted as 0)

    def largest_part(self) -> str:
        scan_parts = {k: v for k, v in self.parts.items() if k != "process"}
        return max(scan_parts, key=scan_parts.get) if scan_parts else "process"


def _rss_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def device_available_bytes() -> int | None:
    """Free memory of the current CUDA device (through CuPy, when it is installed), else None."""
    try:
        import cupy

        return int(cupy.cuda.runtime.memGetInfo()[0])
    except Exception:  # noqa: BLE001 - no CuPy or no usable GPU: nothing to check against
        return None


def estimate_scan_memory(prepared: PreparedModel, spec: ScanSpec, *, device_backend: bool = False,
                         device_runtime: bool = False, augmented: AugmentedModel | None = None) -> MemoryEstimate:
    """Estimated peak memory of ``scan_prepared(prepared, spec)`` (see the module docstring for
    what each part counts and how good it is). ``device_runtime``: onnxruntime runs on CUDA;
    ``device_backend``: the CKA math runs on CuPy; ``augmented``: the graph the scan will run
    (with probed ranks), when the caller has it."""
    specs = prepared.input_specs
    check_dim_names(specs, spec.dims_dict)
    selection = prepared.taps(spec.level, spec.taps)
    augmented = augmented or prepared.augmented(selection, spec.reduce, spec.layouts)
    added = {name for node in augmented.proto.graph.node[len(prepared.proto.graph.node):] for name in node.output}
    activations = prepared.index.activations | {o.name for o in augmented.proto.graph.output} | added
    sizes, unsized = tensor_sizes(augmented.proto, activations, spec.dims_dict)
    samples = spec.samples
    cka_batch = spec.cka_batch if spec.cka_batch is not None else samples
    run_batch = min(RUN_CHUNK, cka_batch) if spec.cka_batch is None else cka_batch
    input_elements = sum(sizes.get(s.name, 0) // max(s.dtype.itemsize, 1) for s in specs)
    input_bytes = sum(sizes.get(s.name, 0) for s in specs)
    probe = 2 * run_batch * (input_bytes + 8 * input_elements)
    if spec.inputs is not None:
        probe += samples * input_bytes
    feature_elements = sum(sizes.get(name, 0) // 4 for name in augmented.fetch_names)  # float32
    features = cka_batch * feature_elements * (4 + 4 + 8) + (8 * cka_batch * feature_elements
                                                            if spec.estimator == "biased" else 0)
    layers = len(selection.points)
    block_rows = max(1, GRAM_BLOCK_BYTES // (8 * cka_batch * max(layers, 1)))
    gram = 2 * 8 * layers * cka_batch * min(cka_batch, block_rows)
    runs = math.ceil(cka_batch / run_batch) * max(samples // cka_batch, 1)
    first_run = run_batch * live_peak(augmented.proto.graph, sizes)
    uses_pattern = runs > 1 and getattr(prepared.sessions, "mem_pattern", True)  # onnxruntime's default
    pattern = run_batch * live_peak(augmented.proto.graph, planned_tensors(prepared, sizes)) if uses_pattern else 0
    activations = first_run + pattern
    # onnxruntime's copy of every tensor, plus the proto's own copy of those not kept in external data
    weights = prepared.weight_bytes + sum(init.ByteSize() for init in prepared.proto.graph.initializer)
    parts = {"process": _rss_bytes(), "weights": weights, "probe": probe, "features": features,
             "gram": gram, "activations": activations}
    device = (weights + activations if device_runtime else 0) + (
        cka_batch * feature_elements * 8 + gram if device_backend else 0)
    host = sum(parts.values()) - (activations if device_runtime else 0)
    return MemoryEstimate(host_bytes=int(host), device_bytes=int(device), parts=parts,
                          run_batch=run_batch, cka_batch=cka_batch, unsized_tensors=unsized)


_LEVERS = {
    "probe": "lower --dim values or --cka-batch",
    "features": "use --reduce pool, a smaller --cka-batch, or fewer --samples with --cka-batch all",
    "gram": "use a smaller --cka-batch (or fewer --samples with --cka-batch all)",
    "activations": "use a smaller --cka-batch or lower --dim values",
    "weights": "scan on a machine with more memory",
    "process": "scan on a machine with more memory",
}


def check_memory(estimate: MemoryEstimate, available: int | None = None, *, reduce: str = "pool",
                 device_available: Callable[[], int | None] = device_available_bytes) -> list[str]:
    """Raise :class:`MemoryLimitError` when the estimate exceeds the available host (or GPU)
    memory; return the warnings to show when it is large (empty otherwise)."""
    if available is None:
        available = available_bytes()
    largest = estimate.largest_part()
    lever = _LEVERS[largest]
    if largest == "features" and reduce == "pool":
        lever = "use a smaller --cka-batch, or fewer --samples with --cka-batch all"
    total = estimate.host_bytes
    if available is not None and total > available:
        raise MemoryLimitError(f"this scan needs about {format_bytes(total)} of memory but "
                               f"{format_bytes(available)} is available ({largest} "
                               f"{format_bytes(estimate.parts[largest])}); {lever}")
    device_room = device_available() if estimate.device_bytes else None
    if device_room is not None and estimate.device_bytes > device_room:
        raise MemoryLimitError(f"this scan needs about {format_bytes(estimate.device_bytes)} of GPU memory but "
                               f"{format_bytes(device_room)} is free; {lever}, or use --device cpu --backend numpy")
    if total > WARN_BYTES or (available is not None and total > WARN_SHARE * available):
        where = f" of {format_bytes(available)} available" if available is not None else ""
        return [f"this scan needs about {format_bytes(total)} of memory{where} ({largest} "
                f"{format_bytes(estimate.parts[largest])}); to lower it, {lever}"]
    return []
