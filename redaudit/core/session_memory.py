"""The micro-batch of a pass that runs a whole graph over many samples outside a scan.

Prune's verification (:class:`redaudit.prune.verify.Evaluator`), healing calibration
(:mod:`redaudit.prune.calibrate`) and the block-cosine scoring (:mod:`redaudit.prune.activations`)
each build their own session on their own graph (the original, a copy cut after the tensors it
reads, a copy with block inputs exposed). Each splits its batches into micro-batches by the rule
a scan uses (:func:`redaudit.core.memory.fit_micro_batch`), applied to the graph it runs:

* per sample: onnxruntime's activations, simulated by :func:`redaudit.core.liveness.live_peak`
  at the feed's own shapes, twice (the first run's arena plus the memory pattern it plans from
  the second run on, which is at most as large; see :mod:`redaudit.core.memory`);
* held whatever the micro-batch: the session's weights, and the fetched outputs of the samples
  the pass keeps (all of them for verification, one calibration batch for healing).

Splitting changes no value: onnxruntime computes each sample on its own and the pieces are
concatenated before anything is computed from them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from redaudit.core.kv_layout import batch_axis, swap_samples
from redaudit.core.liveness import live_peak, tensor_sizes
from redaudit.core.memory import (
    MemoryLimitError,
    fit_micro_batch,
    format_bytes,
    memory_budget,
    session_weight_bytes,
)


def feed_dims(proto: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, int]:
    """The symbolic non-batch dimensions of ``proto``'s inputs as ``feed`` sets them, keyed as
    :func:`redaudit.core.liveness.per_sample_graph` reads them (``dim_param`` or ``input:axis``)."""
    dims: dict[str, int] = {}
    for value in proto.graph.input:
        if value.name not in feed:
            continue
        samples = batch_axis(value)  # 1 for a legacy stacked past: the graph's layout is (2, batch, …)
        shape = swap_samples(np.shape(feed[value.name]), samples)  # redaudit holds every input samples first
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if axis == samples or axis >= len(shape) or (dim.HasField("dim_value") and dim.dim_value > 0):
                continue
            dims[dim.dim_param if dim.HasField("dim_param") else f"{value.name}:{axis}"] = int(shape[axis])
    return dims


def micro_batch_for(proto: onnx.ModelProto, feed: Mapping[str, np.ndarray], max_memory_bytes: int | None,
                    largest: int, *, fetch_names: Sequence[str] | None = None, held_samples: int = 0,
                    what: str = "this pass") -> int:
    """Samples per onnxruntime run for a session of ``proto`` fed like ``feed`` (its shapes are
    read, not its values), at most ``largest``; ``held_samples``: how many samples' fetched
    outputs (``fetch_names``, default the graph outputs) the pass keeps at once. The budget is
    ``max_memory_bytes`` or the default share of the available memory (:func:`memory_budget`).
    Raises :class:`MemoryLimitError` (one line) when not even one sample fits."""
    graph = proto.graph
    names = {name for node in graph.node for name in node.output if name}
    sizes, _ = tensor_sizes(proto, names | {value.name for value in graph.input}, feed_dims(proto, feed))
    activations = 2 * live_peak(graph, sizes)
    fetched = list(fetch_names) if fetch_names is not None else [output.name for output in graph.output]
    held = held_samples * sum(sizes.get(name, 0) for name in fetched)
    fixed = session_weight_bytes(proto) + held
    budget = memory_budget(max_memory_bytes)
    micro = fit_micro_batch(fixed, activations, budget, max(int(largest), 1), activations_per_sample=activations)
    if micro == 0:
        raise MemoryLimitError(f"{what} needs about {format_bytes(fixed + activations)} of memory with one sample "
                               f"per onnxruntime run but {format_bytes(budget or 0)} is available; raise "
                               "--max-memory or lower --dim values")
    return micro
