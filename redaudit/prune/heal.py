"""Training-free healing of a pruned model: each removed span is replaced by a fitted linear map.

``heal_blocks(model, blocks, calibration)`` is what ``prune --heal linear`` runs instead of
plain removal. ``LinearHealer(model, calibration).apply(blocks)`` does the same with the maps
cached per span, for callers that try several removal sets. Steps, each its own module:

1. :func:`redaudit.prune.heal_spans.merge_spans` — removed blocks that follow one another (one's
   exit is the next one's entry) become one span: one map for the whole run fits better than a
   composition of maps each fitted as if its neighbours were still there.
2. :func:`redaudit.prune.calibrate.calibrate_spans` — one pass of the *original* model over the
   calibration batches feeds one ridge accumulator per span (bounded memory). With several
   spans, healing is *sequential* (the default): the first span's map is fitted on the original,
   each later span's map on the entries of the model whose earlier spans are already healed,
   against the original's exits — so a map corrects the error reaching it instead of assuming
   inputs the pruned model never produces (one extra pass per later span).
3. :meth:`RidgeAccumulator.solve` — ridge map toward the identity, α by held-out error.
4. :func:`redaudit.prune.heal_graph.heal_span` — the span is replaced by the map, folded into
   the next linear op where possible; the result is checked (full checker, strict inference).

``heal="attention"`` is the same with a token-mixing term: each span's map also reads the
head-averaged attention pattern of the layer before it (:mod:`redaudit.prune.heal_mix`); a span
with no attention upstream gets the plain map.

``heal="none"`` in the same call is plain removal through the same span logic, so both arms of
a comparison differ only by the map.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx

from redaudit.core.cancel import CancelCheck
from redaudit.prune.calibrate import calibrate_spans, calibration_batches
from redaudit.prune.heal_fit import (
    DEFAULT_FOLDS,
    DEFAULT_LAMBDAS,
    LinearMap,
    RidgeAccumulator,
    fit_linear_heal,
)
from redaudit.prune.heal_graph import default_layout, heal_span
from redaudit.prune.heal_mix import removal_prior, upstream_attention
from redaudit.prune.errors import PruneError
from redaudit.prune.heal_spans import Span, SpanLike, in_graph_order, merge_spans

HEAL_METHODS = ("none", "linear", "attention")

__all__ = [
    "HEAL_METHODS",
    "HealOptions",
    "HealedSpan",
    "LinearHealer",
    "LinearMap",
    "RidgeAccumulator",
    "calibrate_spans",
    "default_layout",
    "fit_linear_heal",
    "heal_blocks",
    "heal_nodes_only",
    "heal_span",
    "heal_step",
]


@dataclass(frozen=True)
class HealedSpan:
    """What healing did to one span: how the map went in, and how well it fits on held-out
    calibration samples (relative squared error, 1 − R²; ``removal_error`` is plain removal's)."""

    span: Span
    how: str
    relative_alpha: float
    heldout_error: float
    removal_error: float
    rows: int
    samples: int
    fitted_after: tuple[str, ...] = ()  # exits of the spans already healed when this map was fitted
    attention: str | None = None  # the upstream attention tensor the map mixes tokens with

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "span": asdict(self.span)}


@dataclass(frozen=True)
class HealOptions:
    """How maps are fitted and put in: calibration batch size, feature layout (None: by rank),
    padding mask input ("auto": ``attention_mask``), ridge grid, prior and folds, whether
    to fold into the next linear op when possible, whether later spans are fitted on the model
    with the earlier ones healed (``sequential``), onnxruntime threads (None: default), and
    whether token batches are sorted by length and run without their trailing padding where
    that is proven to change nothing (``trim_padding``, :mod:`redaudit.prune.padding`);
    ``attention_mix``: maps also read the upstream attention pattern (``--heal attention``);
    ``max_memory_bytes``: bounds each calibration run's micro-batch (None: the default budget);
    ``cancel``: the caller's cancel hook, polled before every calibration run."""

    batch_size: int = 64
    layout: str | None = None
    mask_input: str | None = "auto"
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    prior: str = "identity"
    folds: int = DEFAULT_FOLDS
    fold: bool = True
    sequential: bool = True
    threads: int | None = None
    trim_padding: bool = True
    attention_mix: bool = False
    max_memory_bytes: int | None = None
    cancel: CancelCheck | None = None


#: A span as calibration sees it: (entry, exit) or (entry, exit, attention tensor).
SpanKey = tuple[str, ...]


def _span_key(model: onnx.ModelProto, span: SpanLike | Span, options: HealOptions) -> SpanKey:
    """(entry, exit), plus the attention tensor to mix with when ``attention_mix`` finds one in
    ``model`` (the model the map will be put into)."""
    mixer = upstream_attention(model, span.entry) if options.attention_mix else None
    return (span.entry, span.exit) + ((mixer,) if mixer else ())


def _solve(accumulator: RidgeAccumulator, key: SpanKey, options: HealOptions) -> LinearMap:
    """The ridge map; a mixing map shrinks toward ``[I; 0]`` (plain removal)."""
    if len(key) < 3:
        return accumulator.solve(options.lambdas, options.prior)
    prior = removal_prior(accumulator.d_in, accumulator.d_out) if options.prior == "identity" else "zero"
    return accumulator.solve(options.lambdas, prior)


def _feeds(model: onnx.ModelProto, calibration: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
           options: HealOptions):
    """Calibration feeds: whole arrays cut into batches (sorted by length when trimming), or the
    caller's own feeds as they are."""
    if not isinstance(calibration, Mapping):
        return calibration
    return calibration_batches(model, calibration, options.batch_size,
                               options.mask_input if options.trim_padding else None)


class LinearHealer:
    """Fits one map per span on one model's calibration data, caches it, and applies the maps.

    ``fit`` runs the original model once for all spans not fitted yet, so a caller that tries
    several removal sets (a drift bound, a comparison of policies) pays one pass per new batch
    of spans, not one per candidate model. ``calibration`` is a dict of whole input arrays (cut
    into batches) or a re-iterable sequence of feeds.
    """

    def __init__(self, model: onnx.ModelProto,
                 calibration: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
                 options: HealOptions = HealOptions(), folder: str | None = None) -> None:
        self.model, self.calibration, self.options = model, calibration, options
        self.folder = folder  #: where the model's external tensors live (healed copies keep them there)
        #: ((entry, exit) of the spans healed before it, span key) → map; () = on the original.
        #: A span key is (entry, exit), or (entry, exit, attention) with ``attention_mix``.
        self.maps: dict[tuple[tuple[tuple[str, str], ...], SpanKey], LinearMap] = {}

    def _calibrate(self, spans: list[SpanKey], entry_model: onnx.ModelProto | None):
        options = self.options
        return calibrate_spans(self.model, spans, _feeds(self.model, self.calibration, options),
                               layout=options.layout, mask_input=options.mask_input, folds=options.folds,
                               threads=options.threads, entry_model=entry_model,
                               trim_padding=options.trim_padding, max_memory_bytes=options.max_memory_bytes,
                               folder=self.folder, cancel=options.cancel)

    def fit(self, spans: Sequence[Span]) -> None:
        """Fit, on the original model in one pass, the maps of ``spans`` not fitted yet."""
        self._fit([_span_key(self.model, span, self.options) for span in spans])

    def _fit(self, keys: Sequence[SpanKey]) -> None:
        todo = list(dict.fromkeys(key for key in keys if ((), key) not in self.maps))
        if not todo:
            return
        for key, accumulator in zip(todo, self._calibrate(todo, None)):
            self.maps[((), key)] = _solve(accumulator, key, self.options)

    def apply(self, blocks: Sequence[SpanLike]) -> tuple[onnx.ModelProto, list[HealedSpan]]:
        """The model with ``blocks`` replaced by their spans' maps (checked), and a report."""
        if not blocks:
            raise PruneError("no block selected for removal")
        spans = in_graph_order(self.model, merge_spans(blocks))
        if not self.options.sequential:
            self.fit(spans)
        healed, report, upstream = self.model, [], ()
        for span in spans:
            span_key = _span_key(healed if self.options.sequential else self.model, span, self.options)
            key = (upstream if self.options.sequential else (), span_key)
            if key not in self.maps:
                if not key[0]:
                    self._fit([span_key])
                else:
                    (accumulator,) = self._calibrate([span_key], healed)
                    self.maps[key] = _solve(accumulator, span_key, self.options)
            linear, mixer = self.maps[key], (span_key[2] if len(span_key) > 2 else None)
            healed, how = heal_span(healed, span.entry, span.exit, linear.weight, linear.bias,
                                    self.options.layout, self.options.fold, mixer, self.folder)
            report.append(HealedSpan(span, how, linear.relative_alpha, linear.heldout_error,
                                     linear.removal_error, linear.rows, linear.samples,
                                     tuple(exit_name for _, exit_name in key[0]), mixer))
            upstream = (*upstream, (span.entry, span.exit))
        return healed, report


def heal_blocks(model: onnx.ModelProto, blocks: Sequence[SpanLike],
                calibration: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]], *,
                heal: str = "linear", folder: str | None = None,
                **options: Any) -> tuple[onnx.ModelProto, list[HealedSpan]]:
    """Remove ``blocks`` from ``model`` and (``heal="linear"``) put a fitted map in their place.

    ``options`` are :class:`HealOptions` fields; ``folder`` is where ``model``'s external tensors
    live (the result references them there and holds its new maps inline). Returns the checked model and one
    :class:`HealedSpan` per merged span. ``heal="none"`` is plain removal of the same spans.
    """
    if heal not in HEAL_METHODS:
        raise PruneError(f"--heal must be one of {', '.join(HEAL_METHODS)}; got {heal!r}")
    if not blocks:
        raise PruneError("no block selected for removal")
    if heal in ("linear", "attention"):
        options.setdefault("attention_mix", heal == "attention")
        return LinearHealer(model, calibration, HealOptions(**options), folder).apply(blocks)
    healed, report = model, []
    for span in merge_spans(blocks):
        healed, how = _identity_span(healed, span)
        report.append(HealedSpan(span, how, float("nan"), float("nan"), float("nan"), 0, 0))
    return healed, report


def heal_step(original: onnx.ModelProto, current: onnx.ModelProto, block: SpanLike,
              calibration: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
              options: HealOptions = HealOptions(), folder: str | None = None) -> tuple[onnx.ModelProto, HealedSpan]:
    """Heal one more block of ``current`` — ``original`` with earlier blocks already removed or
    healed (``prune --iterative --heal linear``). As in sequential healing, the map reads the
    entries ``current`` produces and is fitted to ``original``'s exit (surgery keeps tensor
    names); an exit the original does not have is fitted to ``current``'s own."""
    produced = {name for node in original.graph.node for name in node.output}
    in_original = block.exit in produced
    key = _span_key(current, block, options)
    (accumulator,) = calibrate_spans(original if in_original else current, [key],
                                     _feeds(original, calibration, options), layout=options.layout,
                                     mask_input=options.mask_input, folds=options.folds, threads=options.threads,
                                     entry_model=current if in_original else None,
                                     trim_padding=options.trim_padding, max_memory_bytes=options.max_memory_bytes,
                                     folder=folder, cancel=options.cancel)
    linear, mixer = _solve(accumulator, key, options), (key[2] if len(key) > 2 else None)
    healed, how = heal_span(current, block.entry, block.exit, linear.weight, linear.bias, options.layout,
                            options.fold, mixer, folder)
    span = Span(block.entry, block.exit, (block.name,))
    return healed, HealedSpan(span, how, linear.relative_alpha, linear.heldout_error, linear.removal_error,
                              linear.rows, linear.samples, attention=mixer)


#: Name suffixes of the nodes :func:`heal_span` inserts.
HEAL_NODE_SUFFIXES = ("/heal_matmul", "/heal_add", "/heal_conv", "/heal_attention_mean", "/heal_context",
                      "/heal_mix_matmul", "/heal_sum", "/heal_axes")


def heal_nodes_only(block: Any) -> bool:
    """Whether a candidate block of a healed model is nothing but an inserted map (iterative
    pruning must not offer "remove the map" as removing a block of the model)."""
    return bool(block.node_names) and all(name.endswith(HEAL_NODE_SUFFIXES) for name in block.node_names)


def _identity_span(model: onnx.ModelProto, span: Span) -> tuple[onnx.ModelProto, str]:
    """Plain removal of a span through the surgery module (consumers of the exit read the entry)."""
    from redaudit.prune.candidates import Block
    from redaudit.prune.surgery import remove_blocks

    return remove_blocks(model, [Block(span.exit, span.entry, span.exit, "span", (), ())]), "removed"
