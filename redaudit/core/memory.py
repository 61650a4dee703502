"""Peak memory of a scan, estimated before it runs; the onnxruntime micro-batch it decides; the
refusal when not even one sample fits.

The CKA batch is a statistical choice (the paper's 256 samples per estimate), the number of
samples onnxruntime runs at once an engineering one: a ResNet-50 at 224² holds ~53 MB of
intermediate tensors per sample, so 256 at once need 13.6 GB although their pooled IRs are a few
MB. So a scan runs each CKA batch as micro-batches of m samples and concatenates their IRs before
any statistic is computed (onnxruntime computes each sample on its own: the matrix is the same,
bit for bit in our tests). Every part below but ``activations`` is held whatever m is; the
micro-batch is the largest m whose estimate fits the budget (``--max-memory``, by default
:data:`~redaudit.core.spec.DEFAULT_MEMORY_SHARE` of the available memory), see
:func:`fit_micro_batch`. Prune's verification, calibration and scoring passes bound their own
runs with the same rule (:mod:`redaudit.core.session_memory`).

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
* ``probe``: two probe batches of inputs in flight (one CKA batch, or 256 samples with
  ``--cka-batch all``: onnxruntime runs batch k+1 while CKA works on batch k), generated through float64/int64 (numpy's generators), so 8 bytes per element
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
  per sample × the micro-batch. From the second run on, onnxruntime adds a "memory pattern"
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

from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from redaudit.core.augment import AugmentedModel
from redaudit.core.cka import feature_side_cheaper
from redaudit.core.cores import usable_cores  # tests patch it as memory.usable_cores
from redaudit.core.external import weight_bytes
from redaudit.core.hostmemory import (  # re-exported: callers import them from here
    available_bytes,
    format_bytes,
)
from redaudit.core.lanes import LANES_BELOW_WEIGHT_BYTES, fit_lanes, run_chunk
from redaudit.core.liveness import live_peak, planned_tensors, tensor_sizes
from redaudit.core.prepared import PreparedModel
from redaudit.core.probe import check_dim_names
from redaudit.core.spec import DEFAULT_MEMORY_SHARE, ScanSpec
from redaudit.errors import RedauditError

#: Bytes of float64 Gram rows cka.py materialises at once (mirrors cka._GRAM_BLOCK_BYTES).
GRAM_BLOCK_BYTES = 128 * 1024**2
#: Activations of one onnxruntime call on the CPU stay under this: a larger micro-batch runs no
#: faster per sample there (a residual CNN: 8, 32, 128 and 256 samples per call within noise),
#: it only holds more memory. Not applied to CUDA, where large batches do pay.
ACTIVATION_TARGET_BYTES = 1024**3
#: Above this size a scan is announced with a warning, whatever the machine has.
WARN_BYTES = 2 * 1024**3


class MemoryLimitError(RedauditError):
    """The scan's estimated peak memory exceeds what the machine has available."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of one scan, host and device, and the parts they are made of."""

    host_bytes: int
    device_bytes: int
    parts: dict[str, int] = field(default_factory=dict)
    run_batch: int = 0  # onnxruntime's micro-batch; 0: not even one sample fits the budget
    cka_batch: int = 0
    probe_batch: int = 0  # samples the probe hands over at a time: the CKA batch, or a run_chunk()
    unsized_tensors: int = 0  # intermediates shape inference could not size (counted as 0)
    budget: int | None = None  # bytes the scan may add to this process (None: unknown, unbounded)
    lanes: int = 1  # CKA batches computed at once on the CPU (see :func:`fit_lanes`); parts count all
    lane_threads: int | None = None  # onnxruntime intra-op threads of each lane (None: its default)

    @property
    def scan_bytes(self) -> int:
        """What the scan adds to this process (the host estimate less what it already holds)."""
        return self.host_bytes - self.parts.get("process", 0)

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


def memory_budget(max_memory_bytes: int | None, available: int | None = None) -> int | None:
    """The bytes a scan (or a prune pass) may add to this process: ``max_memory_bytes`` (the
    user's ``--max-memory``) or :data:`DEFAULT_MEMORY_SHARE` of what is available, never more
    than is available. None when nothing is known (then nothing is bounded)."""
    available = available_bytes() if available is None else available
    if max_memory_bytes is not None:
        return max_memory_bytes if available is None else min(max_memory_bytes, available)
    return None if available is None else int(DEFAULT_MEMORY_SHARE * available)


def fit_micro_batch(fixed: int, per_sample: int, budget: int | None, largest: int, *,
                    activations_per_sample: int = 0, cpu: bool = True) -> int:
    """The micro-batch rule, the one place it is written: the largest m ≤ ``largest`` with
    ``fixed + m × per_sample ≤ budget``, 0 when not even one sample fits. On the CPU m also keeps
    onnxruntime's activations under :data:`ACTIVATION_TARGET_BYTES` (more buys no speed there)."""
    micro = largest
    if budget is not None:
        if fixed + per_sample > budget:
            return 0
        if per_sample > 0:
            micro = min(largest, (budget - fixed) // per_sample)
    if cpu and activations_per_sample > 0:
        micro = min(micro, max(1, ACTIVATION_TARGET_BYTES // activations_per_sample))
    return max(int(micro), 1)


def session_weight_bytes(proto: onnx.ModelProto) -> int:
    """onnxruntime's copy of every tensor (external ones included) plus the proto's own copy of
    those it holds: about 2 × a self-contained model's tensor bytes, 1 × external data."""
    return weight_bytes(proto) + sum(init.ByteSize() for init in proto.graph.initializer)


def estimate_scan_memory(prepared: PreparedModel, spec: ScanSpec, *, device_backend: bool = False,
                         device_runtime: bool = False, augmented: AugmentedModel | None = None,
                         available: int | None = None, device_available: Callable[[], int | None] | None = None
                         ) -> MemoryEstimate:
    """Estimated peak memory of ``scan_prepared(prepared, spec)`` at the micro-batch it chooses
    (see the module docstring for what each part counts and how good it is). ``device_runtime``:
    onnxruntime runs on CUDA; ``device_backend``: the CKA math runs on CuPy; ``augmented``: the
    graph the scan will run (with probed ranks), when the caller has it; ``available``: host
    bytes available (None: measured now); ``device_available``: free GPU bytes (CuPy's by default)."""
    specs = prepared.input_specs
    check_dim_names(specs, spec.dims_dict)
    selection = prepared.taps(spec.level, spec.taps)
    augmented = augmented or prepared.augmented(selection, spec.reduce, spec.layouts)
    added = {name for node in augmented.proto.graph.node[len(prepared.proto.graph.node):] for name in node.output}
    activations = prepared.index.activations | {o.name for o in augmented.proto.graph.output} | added
    sizes, unsized = tensor_sizes(augmented.proto, activations, spec.dims_dict)
    samples = spec.samples
    cka_batch = spec.cka_batch if spec.cka_batch is not None else samples
    probe_batch = min(run_chunk(device_runtime), cka_batch) if spec.cka_batch is None else cka_batch
    input_elements = sum(sizes.get(s.name, 0) // max(s.dtype.itemsize, 1) for s in specs)
    input_bytes = sum(sizes.get(s.name, 0) for s in specs)
    probe = 2 * probe_batch * (input_bytes + 8 * input_elements)
    if spec.inputs is not None:
        probe += samples * input_bytes
    widths = [sizes.get(name, 0) // 4 for name in augmented.fetch_names]  # float32 elements per sample, per layer
    feature_elements = sum(widths)
    features = cka_batch * feature_elements * (4 + 4 + 8) + (8 * cka_batch * feature_elements
                                                            if spec.estimator == "biased" else 0)
    layers = len(selection.points)
    block_rows = max(1, GRAM_BLOCK_BYTES // (8 * cka_batch * max(layers, 1)))
    gram = 2 * 8 * layers * cka_batch * min(cka_batch, block_rows)
    feature_side = [max(1, width) for width in widths]  # as cka.batch_hsic counts them
    if feature_side and feature_side_cheaper(cka_batch, feature_side):  # cka.py forms C = ZᵀZ instead of Grams:
        gram = 8 * sum(feature_side) ** 2 + 2 * 8 * cka_batch * sum(feature_side)  # C, and Z with one temporary
    first_run = live_peak(augmented.proto.graph, sizes)
    pattern = live_peak(augmented.proto.graph, planned_tensors(prepared, sizes)) \
        if getattr(prepared.sessions, "mem_pattern", True) else 0  # onnxruntime's default
    weights = session_weight_bytes(prepared.proto)
    device_cka = cka_batch * feature_elements * 8 + gram if device_backend else 0
    host_fixed = weights + probe + features + gram
    budget = memory_budget(spec.max_memory_bytes, available)

    def micro_for(per_sample: int) -> int:
        if not device_runtime:
            return fit_micro_batch(host_fixed, per_sample, budget, probe_batch, activations_per_sample=per_sample)
        if fit_micro_batch(host_fixed, 0, budget, probe_batch) == 0:
            return 0
        room = (device_available or device_available_bytes)()
        device_budget = None if room is None else int(DEFAULT_MEMORY_SHARE * room)
        return fit_micro_batch(weights + device_cka, per_sample, device_budget, probe_batch, cpu=False)

    micro = micro_for(first_run + pattern)
    single_run = max(samples // cka_batch, 1) == 1 and cka_batch == probe_batch  # one run: no memory pattern
    if single_run and micro_for(first_run) == probe_batch:
        micro, pattern = probe_batch, 0
    activation_bytes = max(micro, 1) * (first_run + pattern)
    parts = {"process": _rss_bytes(), "weights": weights, "probe": probe, "features": features,
             "gram": gram, "activations": activation_bytes}
    lanes, lane_threads = 1, None
    if not (device_runtime or device_backend) and spec.threads is None \
            and micro >= probe_batch and weight_bytes(prepared.proto) < LANES_BELOW_WEIGHT_BYTES:
        if spec.cka_batch is None:  # one CKA batch of every sample: a lane runs one probe chunk, whose
            per_batch = None        # outputs join the features that batch holds (already counted)
        else:  # a lane holds its batch's tapped outputs and cka.py's one reused float64 buffer (the
            # largest layer); a batch waiting to be folded holds only its L × L HSIC
            largest_layer = max(widths, default=0)
            per_batch = cka_batch * (4 * feature_elements + 8 * largest_layer
                                     + (8 * feature_elements if spec.estimator == "biased" else 0))
        cores = usable_cores()
        lane_parts = fit_lanes(parts, budget, batches=samples // probe_batch, cores=cores, per_batch=per_batch,
                               run_live=micro * first_run)
        if lane_parts is not None:
            lanes, parts = lane_parts
            lane_threads = max(1, cores // lanes)
    device = (weights + activation_bytes if device_runtime else 0) + device_cka
    host = sum(parts.values()) - (activation_bytes if device_runtime else 0)
    return MemoryEstimate(host_bytes=int(host), device_bytes=int(device), parts=parts,
                          run_batch=micro, cka_batch=cka_batch, probe_batch=probe_batch,
                          unsized_tensors=unsized, budget=budget,
                          lanes=lanes, lane_threads=lane_threads)


_LEVERS = {
    "probe": "lower --dim values or --cka-batch",
    "features": "use --reduce pool, a smaller --cka-batch, or fewer --samples with --cka-batch all",
    "gram": "use a smaller --cka-batch (or fewer --samples with --cka-batch all)",
    "activations": "lower --dim values or raise --max-memory",
    "weights": "scan on a machine with more memory",
    "process": "scan on a machine with more memory",
}


def check_memory(estimate: MemoryEstimate, *, reduce: str = "pool",
                 device_available: Callable[[], int | None] = device_available_bytes) -> list[str]:
    """Raise :class:`MemoryLimitError` when not even one sample per onnxruntime run fits the
    budget (or the GPU); return the warnings to show when the scan is large (empty otherwise)."""
    largest = estimate.largest_part()
    lever = _LEVERS[largest]
    if largest == "features" and reduce == "pool":
        lever = "use a smaller --cka-batch, or fewer --samples with --cka-batch all"
    if estimate.run_batch == 0:  # on CUDA the device's share may be what one sample exceeds
        room = device_available() if estimate.device_bytes else None
        if room is not None and estimate.device_bytes > DEFAULT_MEMORY_SHARE * room:
            raise MemoryLimitError(f"this scan needs about {format_bytes(estimate.device_bytes)} of GPU memory with "
                                   f"one sample per onnxruntime run but {format_bytes(DEFAULT_MEMORY_SHARE * room)} "
                                   f"is free for it; {lever}, or use --device cpu --backend numpy")
        raise MemoryLimitError(f"this scan needs about {format_bytes(estimate.scan_bytes)} of memory with one sample "
                               f"per onnxruntime run but {format_bytes(estimate.budget)} is available ({largest} "
                               f"{format_bytes(estimate.parts[largest])}); {lever}")
    device_room = device_available() if estimate.device_bytes else None
    if device_room is not None and estimate.device_bytes > device_room:
        raise MemoryLimitError(f"this scan needs about {format_bytes(estimate.device_bytes)} of GPU memory but "
                               f"{format_bytes(device_room)} is free; {lever}, or use --device cpu --backend numpy")
    total = estimate.scan_bytes
    if total > WARN_BYTES:
        return [(f"this scan needs about {format_bytes(total)} of memory ({largest} "
                 f"{format_bytes(estimate.parts[largest])}, onnxruntime runs {estimate.run_batch} samples at a "
                 f"time); to lower it, {lever}")]
    return []
