"""Result dataclasses shared by scan, report, history, prune and nas.

A :class:`ScanResult` is plain data: arrays and strings, no live sessions, so it can be
rendered, stored and compared without the model at hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from redaudit.core.bootstrap import MeanInterval, bootstrap_mean
from redaudit.core.msrs import pair_scores
from redaudit.core.spec import ScanConfig, ScanSpec  # noqa: F401 - results carry the spec they ran


@dataclass(frozen=True)
class ModelInfo:
    """Identity of the scanned file: ``sha256`` is the version key used by the history."""

    path: str
    sha256: str
    size_bytes: int
    parameter_count: int
    opset: int
    producer: str
    inputs: tuple[tuple[str, str, tuple[int | str, ...]], ...]  # (name, dtype, shape)


@dataclass(frozen=True)
class LayerInfo:
    """One tapped IR. ``name`` is the tensor name in the ONNX graph (unique key).

    ``shape`` is what static typing knew (``?`` for unknown dims, empty for an unknown rank);
    ``runtime_shape`` what the run produced (``N`` on the batch axis, ``?`` only where a dim
    varied between batches). ``reduced_axes`` are the axes averaged into one feature vector per
    sample, numbered as in the tensor (empty: flattened); ``layout`` says what they mean
    (``tokens``, ``channels``, ``features``) and ``layout_source`` who decided it
    (``graph``, ``rank``, ``override``, ``recurrent``)."""

    name: str
    op: str
    shape: tuple[int | str, ...]
    node: str = ""
    runtime_shape: tuple[int | str, ...] = ()
    reduced_axes: tuple[int, ...] = ()
    layout: str | None = None
    layout_source: str = ""
    unit: str = ""  # what this IR is: "embedding", "decoder layer 3", "decoder layer 3 mlp" ("" unknown)

    @property
    def display_shape(self) -> tuple[int | str, ...]:
        """The runtime shape when the run recorded one, else the static shape."""
        return self.runtime_shape or self.shape


@dataclass(frozen=True)
class LayerRow:
    """One row of the per-layer view every renderer shows (JSON, HTML, terminal, history):
    the layer, how its IR was reduced, and what the similarity matrix says about it.
    Non-finite numbers are None."""

    position: int
    name: str
    op: str
    node: str
    shape: tuple[int | str, ...]
    runtime_shape: tuple[int | str, ...]
    reduced_axes: tuple[int, ...]
    layout: str | None
    layout_source: str
    redundancy: float | None
    most_similar: str | None
    most_similar_cka: float | None
    issue: str | None

    @property
    def display_shape(self) -> str:
        return "×".join(map(str, self.runtime_shape or self.shape)) or "?"

    @property
    def reduction(self) -> str:
        """How the IR became features, in a few words: ``tokens: mean axis 1``, ``channels: mean
        axes 2,3``, ``time: mean axis 0``, ``as is`` or ``flattened``; ``(--layout)`` marks an
        override."""
        if not self.reduced_axes:
            return "as is" if self.layout == "features" else "flattened"
        what = "time" if self.layout_source == "recurrent" else self.layout or "?"
        axes = ",".join(map(str, self.reduced_axes))
        text = f"{what}: mean axis {axes}" if len(self.reduced_axes) == 1 else f"{what}: mean axes {axes}"
        return text + (" (--layout)" if self.layout_source == "override" else "")


def _finite_or_none(value: float) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None


@dataclass
class ScanResult:
    """Everything one scan measured.

    ``similarity`` is L × L in ``layers`` order: the mean of the per-batch CKA matrices
    (``aggregate="cka"``) or CKA of batch-averaged HSIC (``aggregate="hsic"``).
    ``msrs_batches`` holds MSRS per probe batch (NaN where the batch was degenerate).
    ``layer_issues`` maps a layer name to a human reason (constant output, NaN/Inf values).
    """

    model: ModelInfo
    layers: list[LayerInfo]
    similarity: np.ndarray
    msrs: float
    msrs_std: float
    msrs_batches: np.ndarray
    config: ScanSpec
    samples: int
    batches: int
    dropped_samples: int
    nan_batches: int
    inputs_real: bool
    input_hash: str
    provider: str
    backend: str
    redaudit_version: str
    timings: dict[str, float] = field(default_factory=dict)
    layer_issues: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unit: str = ""  # what one IR is: "decoder layer", "residual block", "weighted layer" ... (docs/taps.md)
    #: Samples per onnxruntime run (the memory budget's choice, see core/memory.py); 0: not recorded.
    micro_batch: int = 0
    _rows: tuple[LayerRow, ...] | None = field(default=None, init=False, repr=False, compare=False)
    _interval: MeanInterval | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def msrs_interval(self) -> MeanInterval:
        """The 95 % percentile bootstrap interval of MSRS over the finite per-batch values
        (:func:`redaudit.core.bootstrap.bootstrap_mean`; undefined with fewer than two)."""
        if self._interval is None:
            self._interval = bootstrap_mean(self.msrs_batches)
        return self._interval

    def layer_rows(self) -> tuple[LayerRow, ...]:
        """The per-layer view, built once (a ScanResult is not edited after the scan; use
        ``dataclasses.replace`` to derive one, which starts without the cache)."""
        if self._rows is None:
            names = self.layer_names
            redundancy = self.layer_redundancy() if names else np.zeros(0)
            nearest = self.most_similar() if names else []
            self._rows = tuple(
                LayerRow(position=i, name=layer.name, op=layer.op, node=layer.node, shape=tuple(layer.shape),
                         runtime_shape=tuple(layer.runtime_shape), reduced_axes=tuple(layer.reduced_axes),
                         layout=layer.layout, layout_source=layer.layout_source,
                         redundancy=_finite_or_none(redundancy[i]),
                         most_similar=names[nearest[i][0]] if nearest[i][0] >= 0 else None,
                         most_similar_cka=_finite_or_none(nearest[i][1]),
                         issue=self.layer_issues.get(layer.name))
                for i, layer in enumerate(self.layers))
        return self._rows

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def log2_msrs(self) -> float:
        return float(np.log2(self.msrs)) if self.msrs > 0 else float("-inf")

    def msrs_unavailable_reason(self) -> str | None:
        """One line saying why MSRS is undefined (every batch degenerate), naming the layers and
        the likely cause; None when MSRS is a number."""
        if np.isfinite(self.msrs):
            return None
        names = [layer.name for layer in self.layers if layer.name in self.layer_issues]
        if not names:
            return "MSRS cannot be computed: no batch gave a defined similarity matrix"
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        issues = " ".join(self.layer_issues[name] for name in names)
        if "NaN/Inf" in issues:
            cause = ("non-finite activations: overflow (float16?) or inputs outside the range the model "
                     "expects; pass real data with --inputs")
        elif not self.inputs_real:
            cause = ("synthetic probe inputs that leave these layers constant; pass real data with --inputs "
                     "(or --int-range for token ids), or leave the layers out with --tap")
        else:
            cause = ("these layers do not vary with the inputs (dead or saturated activations); "
                     "leave them out with --tap")
        return (f"MSRS cannot be computed: every one of the {self.batches} batch(es) had a degenerate layer "
                f"({shown}); likely cause: {cause}")

    def layer_redundancy(self) -> np.ndarray:
        """Soft count, per layer, of other layers it is more than ε alike (its share of MSRS × 2)."""
        scores = pair_scores(self.similarity, self.config.epsilon, self.config.beta)
        np.fill_diagonal(scores, 0.0)
        return np.nansum(scores, axis=1)

    def most_similar(self) -> list[tuple[int, float]]:
        """For each layer, the index of the most similar *other* layer and its similarity."""
        matrix = np.array(self.similarity, dtype=np.float64, copy=True)
        np.fill_diagonal(matrix, -np.inf)
        matrix = np.where(np.isnan(matrix), -np.inf, matrix)
        out = []
        for row in matrix:
            if len(row) < 2 or not np.isfinite(row).any():
                out.append((-1, float("nan")))
            else:
                j = int(np.argmax(row))
                out.append((j, float(row[j])))
        return out

    def consecutive_similarity(self) -> np.ndarray:
        """CKA(IR_l, IR_{l+1}) for l = 0..L-2: the signal similarity-guided pruning uses."""
        size = len(self.layers)
        return np.array([self.similarity[i, i + 1] for i in range(size - 1)], dtype=np.float64)

    def top_pairs(self, count: int = 10) -> list[tuple[int, int, float]]:
        """The ``count`` most similar distinct layer pairs (i < j), most similar first."""
        size = len(self.layers)
        rows, cols = np.triu_indices(size, k=1)
        values = self.similarity[rows, cols]
        order = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")[:count]
        return [(int(rows[k]), int(cols[k]), float(values[k])) for k in order]
