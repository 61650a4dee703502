"""Calibration for healing: run the *original* model on calibration batches with the entry and
exit tensors of each span exposed as extra outputs, and feed one :class:`RidgeAccumulator` per
span. Activations live for one batch only; what stays is O(D²) per span.

Calibration samples must not be the evaluation samples (a map fitted and judged on the same
samples flatters itself); the caller passes them separately.

Padding: for token models the rows that are padding are computed but ignored downstream (mean
pooling and attention mask them out); fitting the map on them would spend its capacity on rows
that do not matter. ``mask_input`` names an integer graph input of shape (N, S) whose non-zero
entries mark the rows to use; ``"auto"`` picks ``attention_mask`` when the model has one and
the activation's leading dims match it.

With a mask, ``trim_padding`` (the default) also runs each batch only as long as its longest
real sequence, once a few samples run both ways have shown that this changes no fetched value
on a real row (:mod:`redaudit.prune.padding`), and :func:`calibration_batches` sorts samples
by length so that batches are short: MiniLM padded to 64 tokens calibrates in a fraction of the
time with the same statistics.
"""
from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from redaudit.prune.heal_fit import DEFAULT_FOLDS, RidgeAccumulator
from redaudit.prune.heal_graph import LAYOUTS, default_layout
from redaudit.prune.heal_mix import mix_features
from redaudit.prune.padding import sequence_axis_is_free, sorted_by_length, trim_is_exact, trimmed
from redaudit.prune.errors import PruneError
from redaudit.prune.surgery import _live_nodes
from redaudit.core.cancel import CancelCheck, before_each_run
from redaudit.core.run import BatchRunner, SessionFactory
from redaudit.core.session_memory import micro_batch_for

AUTO_MASK_INPUTS = ("attention_mask",)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(model).graph
    return {info.name: info.type.tensor_type.elem_type
            for info in list(graph.input) + list(graph.value_info) + list(graph.output)
            if info.type.HasField("tensor_type")}


def outputs_only(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are exactly ``tensors`` (none of them a graph input).

    Nodes none of them depends on are deleted (onnxruntime would still run them): calibrating a
    span near the input costs a fraction of a full run.
    """
    exposed = copy.deepcopy(model)
    graph = exposed.graph
    types = _elem_types(model)
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None)
                        for name in tensors)
    live = _live_nodes(graph)  # onnxruntime keeps and runs dead nodes: delete them here
    kept = [node for position, node in enumerate(graph.node) if position in live]
    del graph.node[:]
    graph.node.extend(kept)
    return exposed


def batches(arrays: Mapping[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Consecutive slices of equally long input arrays."""
    count = next(iter(arrays.values())).shape[0]
    for start in range(0, count, batch_size):
        yield {name: array[start:start + batch_size] for name, array in arrays.items()}


def calibration_batches(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray], batch_size: int,
                        mask_input: str | None = "auto") -> Iterator[dict[str, np.ndarray]]:
    """Batches of ``arrays`` for calibration: sorted by real length when the model has a padding
    mask (see the module docstring; the sample → fold assignment changes, nothing else), plain
    consecutive slices otherwise."""
    mask_name = _mask_name(model, mask_input)
    if mask_name is not None and mask_name in arrays and np.ndim(arrays[mask_name]) == 2:
        arrays = sorted_by_length(arrays, mask_name)
    return batches(arrays, batch_size)


def _features_last(array: np.ndarray, layout: str) -> np.ndarray:
    return np.moveaxis(array, 1, -1) if layout == "channel" else array


def _mask_name(model: onnx.ModelProto, mask_input: str | None) -> str | None:
    names = {inp.name for inp in model.graph.input}
    if mask_input == "auto":
        return next((name for name in AUTO_MASK_INPUTS if name in names), None)
    if mask_input is not None and mask_input not in names:
        raise PruneError(f"calibration mask input {mask_input!r} is not an input of the model")
    return mask_input


def _fetcher(model: onnx.ModelProto, names: Sequence[str], threads: int | None, max_memory_bytes: int | None,
             folder: str | None, cancel: CancelCheck | None = None):
    """feed → {name: array} for ``names``: graph inputs straight from the feed, the rest from one
    session of ``model`` cut after the last of them, run in micro-batches sized to the memory
    budget (:func:`~redaudit.core.session_memory.micro_batch_for`, once per feed shape: trimmed
    token batches differ in length) and joined, so each feed's values are those of one run.
    External tensors are read from ``folder``; ``cancel`` is polled before each run."""
    graph_inputs = {inp.name for inp in model.graph.input}
    fetched = [name for name in dict.fromkeys(names) if name not in graph_inputs]
    cut = outputs_only(model, fetched) if fetched else None
    session = SessionFactory("auto", threads, folder).create(cut)[0] if cut is not None else None
    # A model healed so far lacks its removed layers' KV-cache inputs: feed only what it takes.
    taken = {item.name for item in session.get_inputs()} if session else set()
    micro_batches: dict[tuple, int] = {}

    def run(feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        feed = {name: array for name, array in feed.items() if name in taken}
        count = len(next(iter(feed.values())))
        key = tuple((name, np.shape(array)[1:]) for name, array in sorted(feed.items()))
        if key not in micro_batches:
            micro_batches[key] = micro_batch_for(cut, feed, max_memory_bytes, count, held_samples=count,
                                                 what="healing calibration")
        return BatchRunner(session, fetched, chunk=micro_batches[key],
                           before_run=before_each_run(cancel, "prune")).run(feed)

    def fetch(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = dict(zip(fetched, run(feed))) if session else {}
        values.update({name: np.asarray(feed[name]) for name in names if name in graph_inputs})
        return values
    return fetch


def _fetching(threads: int | None, max_memory_bytes: int | None, folder: str | None,
              cancel: CancelCheck | None = None):
    """(model, names) → a fetch function with this pass's session settings (:func:`_fetcher`)."""
    return lambda model, names: _fetcher(model, names, threads, max_memory_bytes, folder, cancel)


class _Trim:
    """Whether feeds run without their trailing padding: ``decided`` None until the first batch
    that can be shortened, then proven once on it (:func:`trim_is_exact`, whose full-length
    feed is kept as ``proven_on``) and kept for the run."""

    def __init__(self, decided: bool | None, mask_name: str | None) -> None:
        self.decided, self.mask_name = decided, mask_name
        self.proven_on: Mapping[str, np.ndarray] | None = None

    def apply(self, feed: Mapping[str, np.ndarray], fetch) -> Mapping[str, np.ndarray]:
        if self.decided is False or self.mask_name is None or np.ndim(feed[self.mask_name]) != 2:
            return feed
        shorter = trimmed(feed, self.mask_name)
        if shorter[self.mask_name].shape == np.shape(feed[self.mask_name]):
            return feed
        if self.decided is None:
            self.decided, self.proven_on = trim_is_exact(fetch, feed, self.mask_name), feed
        return shorter if self.decided else feed


def _one_pass(fetch, calibration: Iterable[Mapping[str, np.ndarray]], trim: _Trim):
    """(feed, values) per batch from one session that exposes entries and exits together."""
    for feed in calibration:
        feed = trim.apply(feed, fetch)
        yield feed, fetch(feed)


def _exits_then_entries(fetch, model: onnx.ModelProto, exits: list[str], entry_model: onnx.ModelProto,
                        entries: list[str], calibration: Iterable[Mapping[str, np.ndarray]], trim: _Trim):
    """(feed, values) per batch, the exits read from ``model`` and the entries from ``entry_model``
    — never with both sessions alive: each holds a copy of the weights (a 2.5 GB decoder's
    sequential healing held two). The exits of every batch are run first and kept in a temporary
    folder (one batch in memory at a time), then that session goes and the entry model's runs.
    The feeds are kept as given (slices of the calibration arrays). A padding cut proven on
    ``model`` is proven again on ``entry_model``; if it does not hold there, the exits are
    recomputed on full batches and neither pass cuts."""
    feeds = list(calibration)
    with tempfile.TemporaryDirectory(prefix="redaudit-calibration-") as folder:
        stored = [Path(folder) / f"{batch}-{k}.npy" for batch in range(len(feeds)) for k in range(len(exits))]

        def run_exits(cut: bool | None) -> None:
            fetch_exits = fetch(model, exits)
            for batch, feed in enumerate(feeds):
                values = fetch_exits(trim.apply(feed, fetch_exits) if cut is None else feed)
                for k, name in enumerate(exits):
                    np.save(stored[batch * len(exits) + k], values[name])

        run_exits(None)  # decides the padding cut on the exits' model
        fetch_entries = fetch(entry_model, entries)
        if trim.decided and trim.proven_on is not None and not trim_is_exact(fetch_entries, trim.proven_on,
                                                                             trim.mask_name):
            del fetch_entries
            trim.decided = False
            run_exits(False)
            fetch_entries = fetch(entry_model, entries)
        for batch, feed in enumerate(feeds):
            feed = trim.apply(feed, fetch_entries)
            values = {name: np.load(stored[batch * len(exits) + k]) for k, name in enumerate(exits)}
            values.update(fetch_entries(feed))  # where a name is both, the entry model's value wins
            yield feed, values


def calibrate_spans(model: onnx.ModelProto, spans: Sequence[tuple[str, str] | tuple[str, str, str | None]],
                    calibration: Iterable[Mapping[str, np.ndarray]], *, layout: str | None = None,
                    mask_input: str | None = "auto", folds: int = DEFAULT_FOLDS,
                    threads: int | None = None, entry_model: onnx.ModelProto | None = None,
                    trim_padding: bool = True, max_memory_bytes: int | None = None,
                    folder: str | None = None, cancel: CancelCheck | None = None) -> list[RidgeAccumulator]:
    """One accumulator per (entry, exit) span, fed with the original model's activations.

    ``calibration`` yields input feeds (one batch each). ``layout`` is "last" (features on the
    last axis), "channel" (axis 1, NCHW) or None (by rank, :func:`default_layout`).
    ``entry_model``: read the entries from this model instead (same inputs, same tensor names)
    while the exits — the targets — still come from ``model``. Sequential healing passes the
    model whose upstream spans are already healed, so each map learns to undo the error of the
    maps before it instead of assuming an input the pruned model never produces.
    ``trim_padding``: cut trailing padding from each batch where proven exact (module docstring).
    A span (entry, exit, attention) with an attention tensor is fitted on the features
    ``[x, P̄x]`` (:mod:`redaudit.prune.heal_mix`); the attention is read where the entries are.
    ``max_memory_bytes``: the budget that sizes onnxruntime's micro-batches (None: the default).
    ``folder``: where both models' external tensors live (the source model's folder).
    ``cancel``: polled before every onnxruntime run (ScanCancelled when it says stop).
    """
    if layout is not None and layout not in LAYOUTS:
        raise PruneError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    mixers = [span[2] if len(span) > 2 else None for span in spans]
    entries = [span[0] for span in spans] + [mixer for mixer in mixers if mixer]
    exits = [span[1] for span in spans]
    mask_name = _mask_name(model, mask_input)
    # None: not decided yet (no batch with padding to cut seen); then True/False for the run
    trim = _Trim(None if (trim_padding and mask_name is not None and sequence_axis_is_free(model, mask_name))
                 else False, mask_name)
    fetch = _fetching(threads, max_memory_bytes, folder, cancel)
    if entry_model is None:
        passes = _one_pass(fetch(model, entries + exits), calibration, trim)
    else:
        passes = _exits_then_entries(fetch, model, exits, entry_model, entries, calibration, trim)
    accumulators: list[RidgeAccumulator | None] = [None] * len(spans)
    layouts: list[str] = [layout or ""] * len(spans)
    seen_batches = 0
    for feed, values in passes:
        seen_batches += 1
        for i, span in enumerate(spans):
            x, y = values[span[0]], values[span[1]]
            layouts[i] = layouts[i] or default_layout(x.ndim)
            x, y = _features_last(x, layouts[i]), _features_last(y, layouts[i])
            if mixers[i]:
                x = mix_features(values[mixers[i]], x)
            mask = None
            if mask_name is not None and feed[mask_name].shape == x.shape[:-1]:
                mask = np.asarray(feed[mask_name]) != 0
            if accumulators[i] is None:
                accumulators[i] = RidgeAccumulator(x.shape[-1], y.shape[-1], folds)
            accumulators[i].add_batch(x, y, mask)
    if not seen_batches:
        raise PruneError("no calibration samples were given")
    return [acc for acc in accumulators if acc is not None]
