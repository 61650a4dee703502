"""Orchestrates a scan: prepared model → taps → augmented graph → batches → similarity → MSRS.

onnxruntime runs batch k+1 in a worker thread while the CKA math of batch k runs here: both
release the GIL, so the similarity cost hides behind inference. On the CPU, a model small enough
runs several batches at once instead ("lanes", :func:`~redaudit.core.lanes.fit_lanes`): each
worker runs a whole batch, inference on its share of the cores and then its HSIC, and this thread
folds the batches in order, so the matrix is the same bit for bit; with one CKA batch of every
sample (``--cka-batch all``) a lane runs one probe chunk's inference and this thread joins the
chunks in order before the one HSIC. Every stage is announced
through the ``progress`` callback (the library never prints; always called on the scan's own
thread, one call at a time), the batches stage after every onnxruntime micro-batch, so a large
model's CKA batch of many micro-batches shows it is moving; ``cancel`` is polled before
every onnxruntime micro-batch (in the worker threads) and between batches, so a service can stop a
job without killing its worker and without waiting for a whole CKA batch of a large model; the
first lane told to stop sets the stop flag, and the others stop at their next call without
asking again. An error or interrupt on the scan's own thread likewise stops the workers at their
next micro-batch.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import islice
from queue import SimpleQueue
from threading import Event

import numpy as np

from redaudit.core.version import __version__
from redaudit.core.augment import Reduction
from redaudit.core.backend import blas_beside_cpu_inference, select_backend
from redaudit.core.cancel import CancelCheck, check_cancel
from redaudit.core.cka import BatchHsic, batch_hsic
from redaudit.core.memory import check_memory, estimate_scan_memory
from redaudit.core.prepared import PreparedModel
from redaudit.core.probe import make_probe
from redaudit.core.progress import ProgressCallback, notify
from redaudit.core.result import LayerInfo, ScanResult
from redaudit.core.run import CUDA, BatchRunner
from redaudit.core.shapes import PROBE_SAMPLES, RuntimeShapes, per_sample, probe_ranks
from redaudit.core.similarity import SimilarityAccumulator
from redaudit.core.spec import ScanSpec, min_batch
from redaudit.core.tap import TapPoint
from redaudit.errors import ConfigError, ScanCancelled

@dataclass(frozen=True)
class _LaneBatch:
    """What a worker hands back for one batch: its inference seconds, shape rows, the shapes of
    taps without a batch axis, the taps that carry it (``kept``), and either their features (folded
    by the scan's thread) or, with several lanes, the batch's HSIC already computed in the worker."""

    seconds: float
    shape_rows: list[np.ndarray]
    dropped: dict[int, tuple[int, ...]]  # shapes of the taps without the batch axis
    kept: list[int]
    count: int
    features: list[np.ndarray] | None
    hsic: BatchHsic | None


def _layer_info(point: TapPoint, reduction: Reduction, shapes: RuntimeShapes, position: int) -> LayerInfo:
    return LayerInfo(name=point.tensor, op=point.op, shape=tuple(point.shape), node=point.node,
                     runtime_shape=shapes.shape(position), reduced_axes=tuple(reduction.axes or ()),
                     layout=reduction.layout, layout_source=reduction.source, unit=point.unit)


def check_batching(spec: ScanSpec, samples: int) -> int:
    """The CKA batch size ``spec`` gives for ``samples`` probe samples, or a ConfigError saying
    why it cannot be scanned. Prune asks before its work, whatever its policy, so a bad option
    is refused up front rather than ending as a late "MSRS not measured" warning."""
    batch_size = spec.cka_batch if spec.cka_batch is not None else samples
    if samples < batch_size:
        raise ConfigError(f"only {samples} probe samples but --cka-batch is {batch_size}; "
                          "pass more samples or lower --cka-batch")
    if batch_size < min_batch(spec.estimator):
        raise ConfigError(f"at least {min_batch(spec.estimator)} probe samples are needed for the "
                          f"{spec.estimator} estimator")
    return batch_size


def scan_prepared(prepared: PreparedModel, spec: ScanSpec, *,
                  inputs: Mapping[str, np.ndarray] | None = None,
                  progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> ScanResult:
    """Measure layer similarity and MSRS of a prepared model, as ``spec`` says.

    ``inputs`` (arrays by input name) overrides ``spec.inputs`` (an .npz path); with neither,
    probes are synthetic and the result says so. Raises RedauditError subclasses for user
    errors and :class:`~redaudit.errors.ScanCancelled` when ``cancel()`` turns true.
    """
    started = time.perf_counter()
    array_backend = select_backend(spec.backend)
    prepared = prepared.on_device(spec.device, spec.threads)
    stage_times: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        stage_times[f"{name}_s"] = now - mark
        mark = now

    notify(progress, "taps")
    selection = prepared.taps(spec.level, spec.taps)
    lap("taps")
    check_cancel(cancel)
    notify(progress, "probe")
    probe = make_probe(prepared.input_specs, prepared.probe_source(spec, inputs), spec.samples,
                       spec.seed, spec.dims_dict, spec.int_range)
    lap("probe")
    notify(progress, "augment")
    augmented = prepared.augmented(selection, spec.reduce, spec.layouts)
    if augmented.unresolved:  # typing left some ranks unknown: learn them from one probe batch
        head = next(iter(probe.batches(PROBE_SAMPLES, PROBE_SAMPLES)))
        ranks = probe_ranks(prepared.sessions, augmented, head)
        augmented = prepared.augmented(selection, spec.reduce, spec.layouts, tuple(sorted(ranks.items())))
    estimate = estimate_scan_memory(prepared, spec, device_backend=array_backend.name == "cupy",
                                    device_runtime=prepared.sessions.providers()[0] == CUDA, augmented=augmented)
    memory_warnings = check_memory(estimate, reduce=spec.reduce)  # refuses only what one sample cannot fit
    lap("augment")
    notify(progress, "session")
    lanes = estimate.lanes
    if lanes > 1:  # k batches at once, each on its share of the cores (core/lanes.py says why)
        prepared = prepared.on_device(spec.device, estimate.lane_threads)
    session, provider = prepared.session(augmented)
    lap("session")
    check_cancel(cancel)
    batch_size = check_batching(spec, probe.samples)
    on_gpu = provider == "CUDAExecutionProvider" and array_backend.name == "cupy"
    # each probe batch runs as micro-batches of the estimate's size (a fixed batch axis caps it
    # further) whose pooled IRs the runner concatenates: the CKA batch stays the one the spec says
    stopping = Event()  # set when this thread leaves the batch loop: the workers' batches are for nobody

    def before_micro_batch() -> None:  # runs in a worker thread, before each onnxruntime call
        if stopping.is_set():
            raise ScanCancelled("scan stopped")
        if cancel is not None and cancel():
            stopping.set()  # the other lanes stop at their next call without asking again
            raise ScanCancelled("scan cancelled")

    # Each finished micro-batch (in a worker) posts its sample count, and each finished batch a
    # None; this thread waits on that queue, so progress moves with every onnxruntime call and
    # the callback only ever runs here.
    ran: SimpleQueue[int | None] = SimpleQueue()
    runner = BatchRunner(session, [*augmented.fetch_names, *augmented.shape_names], chunk=estimate.run_batch,
                         device_arrays=array_backend.xp if on_gpu else None, before_run=before_micro_batch,
                         after_run=ran.put)
    tapped_at = time.perf_counter()

    run_size = batch_size if spec.cka_batch is not None else min(estimate.probe_batch, batch_size)
    batch_count = probe.samples // batch_size
    used_samples = batch_count * batch_size
    layers = list(selection.points)
    keep = list(range(len(layers)))
    shapes = RuntimeShapes([point.batch_axis for point in layers])
    warnings = [*prepared.notes, *selection.warnings, *probe.warnings, *memory_warnings]
    accumulator: SimilarityAccumulator | None = None
    pending_features: list[list[np.ndarray]] = []
    run_seconds = 0.0
    done = 0
    shown = 0  # samples the progress last reported: those run, or folded, whichever is ahead
    inferred = 0

    def report(samples: int) -> None:
        nonlocal shown
        if samples > shown:
            shown = samples
            notify(progress, "batches", shown, used_samples)

    def count_run(samples: int | None) -> None:
        nonlocal inferred
        if samples is not None:
            inferred += samples
            report(min(inferred, used_samples))

    def submit(batch: dict[str, np.ndarray]):
        future = pool.submit(lane, batch)
        future.add_done_callback(lambda _: ran.put(None))
        return future

    def lane(batch: dict[str, np.ndarray]) -> _LaneBatch:
        """One batch in a worker thread: inference, and with several lanes its HSIC too."""
        begin = time.perf_counter()
        outputs = runner.run(batch)
        seconds = time.perf_counter() - begin
        outputs, shape_rows = outputs[:len(layers)], outputs[len(layers):]
        count = max((array.shape[0] for array in batch.values() if array.ndim), default=outputs[0].shape[0])
        rows = [per_sample(out, count, (layers[i].shape or (None,))[0], spec.reduce == "pool", bool(layers[i].unit))
                for i, out in enumerate(outputs)]
        kept = [i for i, row in enumerate(rows) if row is not None]
        features = [rows[i] for i in kept]
        dropped = {i: outputs[i].shape for i in range(len(outputs)) if i not in kept}
        if lanes > 1 and len(kept) >= 2 and spec.cka_batch is not None:
            return _LaneBatch(seconds, shape_rows, dropped, kept, count, None,
                              batch_hsic(features, spec.estimator, array_backend.xp))
        return _LaneBatch(seconds, shape_rows, dropped, kept, count, features, None)

    notify(progress, "batches", 0, used_samples)
    with blas_beside_cpu_inference(array_backend, provider != CUDA), ThreadPoolExecutor(max_workers=lanes) as pool:
        try:
            in_flight: deque = deque()
            source = iter(probe.batches(run_size, used_samples))
            # with lanes, twice as many batches as lanes are queued, so that a lane that finishes
            # early starts the next batch instead of waiting for the oldest one to be folded; a
            # finished lane batch holds only its HSIC. One lane: one batch ahead (its features wait).
            depth = 2 * lanes if lanes > 1 else 1
            in_flight.extend(submit(batch) for batch in islice(source, depth))
            while in_flight:
                head = in_flight.popleft()
                while not head.done():  # woken by each micro-batch, and by the batch's end
                    count_run(ran.get())
                while not ran.empty():  # the head's own micro-batches, posted before it ended
                    count_run(ran.get())
                result = head.result()
                run_seconds += result.seconds / lanes  # the lanes' inference overlaps: its share of the wall time
                if stopping.is_set():  # a lane was told to cancel while this batch ran
                    raise ScanCancelled("scan cancelled")
                check_cancel(cancel)
                following = next(source, None)
                if following is not None:  # batch k+lanes starts while this thread folds batch k
                    in_flight.append(submit(following))
                shapes.add(result.shape_rows)
                if accumulator is None:
                    keep = result.kept
                    for i in sorted(set(range(len(layers))) - set(keep)):
                        warnings.append(f"tap {layers[i].tensor!r} has no batch axis at run time "
                                        f"(shape {result.dropped[i]}); dropped")
                    if len(keep) < 2:
                        raise ConfigError("fewer than 2 tapped tensors carry the batch axis at run time; "
                                          "choose taps with --tap")
                    accumulator = SimilarityAccumulator(len(keep), array_backend, spec.estimator, spec.aggregate)
                elif result.kept != keep:
                    raise ConfigError("the tapped tensors that carry the batch axis changed between batches; "
                                      "choose taps with --tap")
                done += result.count
                if result.hsic is not None:
                    accumulator.add_hsic(result.hsic)
                elif spec.cka_batch is None:
                    pending_features.append(result.features)
                    if done >= used_samples:
                        accumulator.add_batch([(array_backend.xp if on_gpu else np).concatenate([part[i] for part in pending_features])
                                               for i in range(len(keep))])
                else:
                    accumulator.add_batch(result.features)
                report(done)
        finally:  # normal end, cancel, error or interrupt: no worker may start another micro-batch
            stopping.set()
            for queued in in_flight:
                queued.cancel()  # not started yet: never starts
    assert accumulator is not None
    notify(progress, "similarity")
    summary = accumulator.finish(spec.epsilon, spec.beta)
    finished = time.perf_counter()

    kept_layers = [layers[i] for i in keep]
    layer_issues = {kept_layers[i].tensor: text for i, text in summary.layer_issues.items()}
    msrs, msrs_std, per_batch, nan_batches = (summary.msrs.mean, summary.msrs.std, summary.msrs.per_batch,
                                              summary.msrs.nan_batches)
    if len(kept_layers) - len(summary.excluded_layers) < 2:  # no pair left: MSRS is undefined, not 0
        msrs = msrs_std = float("nan")
        per_batch, nan_batches = np.full(batch_count, np.nan), batch_count
    if summary.excluded_layers:
        names = ", ".join(kept_layers[i].tensor for i in summary.excluded_layers)
        warnings.append(f"MSRS leaves out {len(summary.excluded_layers)} degenerate layer(s) (constant or "
                        f"non-finite in every batch): {names}")
    if nan_batches and nan_batches < batch_count:
        warnings.append(f"{nan_batches} of {batch_count} batches had degenerate layers and were skipped in MSRS")
    dropped = probe.samples - used_samples
    if dropped:
        warnings.append(f"dropped the final partial batch of {dropped} samples (--cka-batch {batch_size})")
    if not probe.real:
        warnings.append("probe inputs are synthetic (random); pass real data with --inputs for meaningful numbers")
    config = replace(spec, level=selection.level, dims=tuple(sorted(probe.dims.items())))
    result = ScanResult(
        model=prepared.info,
        layers=[_layer_info(p, augmented.reductions[i], shapes, i) for i, p in zip(keep, kept_layers)],
        similarity=summary.similarity, msrs=msrs, msrs_std=msrs_std,
        msrs_batches=per_batch, config=config, samples=used_samples,
        batches=batch_count, dropped_samples=dropped, nan_batches=nan_batches,
        inputs_real=probe.real, input_hash=probe.digest, provider=provider, backend=array_backend.name,
        redaudit_version=__version__,
        timings={**stage_times, "prepare_s": tapped_at - started, "streaming_s": finished - tapped_at,
                 "run_s": run_seconds, "similarity_s": (finished - tapped_at) - run_seconds,
                 "total_s": finished - started},
        layer_issues=layer_issues, warnings=warnings, unit=selection.unit,
        micro_batch=min(runner.chunk or run_size, run_size))
    reason = result.msrs_unavailable_reason()
    if reason:
        result.warnings.insert(0, reason)
    return result
