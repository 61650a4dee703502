"""How to read one MSRS: its scale, its uncertainty, and one sentence that says what it means.

MSRS is a soft count of layer pairs more than ε alike, between 0 and L(L−1)/2; a bare "7.95" means
little without L. Every report (terminal, JSON, HTML, dashboard) shows the same :class:`MsrsReading`,
built here by one function from plain values, so the numbers and the sentence cannot differ
between them. The wording bands are defined once, in :data:`BANDS`; docs/reading-msrs.md explains
them. They are reading aids for the share of pairs above ε, not thresholds from the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from redaudit.core.bootstrap import MIN_INTERVAL_BATCHES, MeanInterval, bootstrap_mean
from redaudit.report.numbers import batches_text, share

#: (upper bound of the share of pairs above ε, exclusive; words). A share of 0 is "no redundancy".
BANDS: tuple[tuple[float, str], ...] = ((0.10, "low redundancy"), (0.50, "moderate redundancy"),
                                        (0.80, "high redundancy"), (math.inf, "very high redundancy"))
#: An interval whose half-width exceeds this share of MSRS is called wide in the sentence.
WIDE_INTERVAL = 0.10


def band(fraction: float) -> str:
    """The words for a share (0..1) of layer pairs above ε."""
    if fraction <= 0.0:
        return "no redundancy at this ε"
    return next(words for bound, words in BANDS if fraction < bound)


@dataclass(frozen=True)
class MsrsReading:
    """MSRS with the scale it is read against.

    ``pairs_above`` counts pairs (i < j) whose batch-mean similarity exceeds ε (the hard count
    behind the soft MSRS), ``pairs_defined`` those with a finite similarity; ``consecutive`` is
    (i, CKA) of the most similar neighbours #i and #i+1, None with fewer than two defined layers.
    """

    msrs: float
    layers: int
    epsilon: float
    pairs_above: int
    pairs_defined: int
    consecutive: tuple[int, float] | None
    interval: MeanInterval

    @property
    def max_pairs(self) -> int:
        return self.layers * (self.layers - 1) // 2

    @property
    def fraction_above(self) -> float | None:
        return self.pairs_above / self.max_pairs if self.max_pairs else None

    @property
    def log2_msrs(self) -> float | None:
        return math.log2(self.msrs) if math.isfinite(self.msrs) and self.msrs > 0 else None

    @property
    def band(self) -> str | None:
        fraction = self.fraction_above
        return None if fraction is None or not math.isfinite(self.msrs) else band(fraction)

    @property
    def sentence(self) -> str:
        """One sentence computed from the numbers above (see docs/reading-msrs.md)."""
        if not math.isfinite(self.msrs):
            return ("MSRS is undefined: every probe batch had a degenerate (constant or non-finite) layer, "
                    "so no pair of layers could be counted.")
        if self.max_pairs == 0:
            return "With fewer than two layers there is no pair to compare: MSRS is 0 by construction."
        eps = f"ε = {self.epsilon:g}"
        if self.pairs_above == 0:
            text = f"None of the {self.max_pairs} layer pairs has a mean CKA above {eps}: {self.band}"
        else:
            text = (f"{self.pairs_above} of {self.max_pairs} layer pairs ({share(self.fraction_above)}) "
                    f"have a mean CKA above {eps}: {self.band}")
        undefined = self.max_pairs - self.pairs_defined
        if undefined:
            text += f" ({undefined} pair{'s' if undefined > 1 else ''} undefined)"
        if self.consecutive is not None:
            i, cka = self.consecutive
            text += f"; the most similar consecutive layers are #{i} and #{i + 1} (CKA {cka:.2f})"
        if not self.interval.defined and self.interval.batches:
            text += (f"; {batches_text(self.interval.batches)}, too few for a confidence interval "
                     f"(it needs {MIN_INTERVAL_BATCHES})")
        elif self.msrs > 0 and self.interval.width / 2 > WIDE_INTERVAL * self.msrs:
            text += (f"; the {self.interval.level:.0%} interval is wide (±{share(self.interval.width / 2 / self.msrs)}"
                     f" of MSRS): more samples would narrow it")
        return text + "."

    def to_dict(self) -> dict:
        """The JSON fields (``reading`` in the scan report and the API)."""
        consecutive = None
        if self.consecutive is not None:
            consecutive = {"a": self.consecutive[0], "b": self.consecutive[0] + 1, "cka": self.consecutive[1]}
        return {"layers": self.layers, "max_pairs": self.max_pairs, "epsilon": self.epsilon,
                "pairs_above_epsilon": self.pairs_above, "pairs_defined": self.pairs_defined,
                "fraction_above_epsilon": self.fraction_above, "log2_msrs": self.log2_msrs,
                "most_similar_consecutive": consecutive, "band": self.band, "sentence": self.sentence}


def read_msrs(similarity, msrs: float, per_batch, epsilon: float,
              interval: MeanInterval | None = None) -> MsrsReading:
    """The reading of one scan from its L × L batch-mean similarity, MSRS, per-batch MSRS and ε.

    Everything shown is computed here: the hard count from the upper triangle, the nearest
    neighbours from the first off-diagonal, the interval from the per-batch values (``interval``:
    one already computed from the same values, e.g. :attr:`ScanResult.msrs_interval`)."""
    matrix = np.asarray(similarity, dtype=np.float64)
    size = matrix.shape[0] if matrix.ndim == 2 else 0
    rows, cols = np.triu_indices(size, k=1)
    values = matrix[rows, cols]
    finite = np.isfinite(values)
    neighbours = np.array([matrix[i, i + 1] for i in range(size - 1)], dtype=np.float64)
    consecutive = None
    if np.isfinite(neighbours).any():
        best = int(np.nanargmax(neighbours))
        consecutive = (best, float(neighbours[best]))
    if interval is None:
        interval = bootstrap_mean([math.nan if value is None else value for value in np.ravel(per_batch)])
    return MsrsReading(msrs=float(msrs), layers=size, epsilon=float(epsilon),
                       pairs_above=int((values[finite] > epsilon).sum()), pairs_defined=int(finite.sum()),
                       consecutive=consecutive, interval=interval)


def reading_of_result(result) -> MsrsReading:
    """:func:`read_msrs` of a :class:`~redaudit.core.result.ScanResult`."""
    return read_msrs(result.similarity, result.msrs, result.msrs_batches, result.config.epsilon,
                     result.msrs_interval)
