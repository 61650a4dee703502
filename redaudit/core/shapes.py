"""Runtime shapes of the tapped tensors: what static typing could not tell, learned by running.

Exporters often compute reshape targets at run time (paddle2onnx, tf2onnx), and ONNX shape
inference then leaves the result shapeless. The documented reduction depends on the rank, so
:func:`probe_ranks` runs one small probe batch through the augmented copy (unresolved taps
exposed raw, every tap's shape as a tiny extra output) before the real session is built.
:class:`RuntimeShapes` then follows every batch's shapes so the result can show each layer's
real shape, with ``N`` on the batch axis and ``?`` only where a dimension really varied.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from redaudit.core.augment import AugmentedModel
from redaudit.core.run import BatchRunner, SessionFactory

#: Samples in the probe batch that learns unknown ranks (2: a batch of 1 can hide the batch
#: axis behind a Squeeze).
PROBE_SAMPLES = 2


def probe_ranks(sessions: SessionFactory, augmented: AugmentedModel,
                batch: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Rank of every unresolved tap, from one run of ``batch`` (a few samples)."""
    wanted = [augmented.tensors.index(name) for name in augmented.unresolved]
    session, _ = sessions.create(augmented.proto, "the model with its taps exposed")
    rows = BatchRunner(session, [augmented.shape_names[i] for i in wanted]).run(batch)
    return {augmented.tensors[i]: int(np.asarray(row).reshape(-1, np.asarray(row).shape[-1]).shape[1])
            for i, row in zip(wanted, rows)}


@dataclass
class RuntimeShapes:
    """Per tap: the shape seen in the first batch, and which dims changed in later ones."""

    batch_axes: list[int]
    _first: list[tuple[int, ...] | None] = field(default_factory=list)
    _varies: list[set[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._first = [None] * len(self.batch_axes)
        self._varies = [set() for _ in self.batch_axes]

    def add(self, rows: list[np.ndarray]) -> None:
        """``rows[i]`` is tap i's shape output of one run: (chunks, rank) int64."""
        for position, row in enumerate(rows):
            row = row.get() if hasattr(row, "get") and not isinstance(row, np.ndarray) else row  # CuPy
            array = np.asarray(row).reshape(-1, np.asarray(row).shape[-1])
            for shape in {tuple(int(d) for d in line) for line in array}:
                first = self._first[position]
                if first is None:
                    self._first[position] = first = shape
                if len(shape) != len(first):
                    self._varies[position].update(range(max(len(shape), len(first))))
                else:
                    self._varies[position].update(i for i, (a, b) in enumerate(zip(shape, first)) if a != b)

    def rank(self, position: int) -> int | None:
        first = self._first[position]
        return None if first is None else len(first)

    def shape(self, position: int) -> tuple[int | str, ...]:
        """Shape for display: ``N`` on the batch axis, ``?`` where a dim varied between batches."""
        first = self._first[position]
        if first is None:
            return ()
        varies = self._varies[position]
        return tuple("N" if axis == self.batch_axes[position] else "?" if axis in varies else dim
                      for axis, dim in enumerate(first))


def per_sample(output, count: int, static_leading: int | str | None, pooled: bool, foldable: bool = True):
    """(count, features) from one fetched tap, or None when it has no batch axis at run time.

    A leading axis of k·count (k > 1) that typing does not fix is the batch folded with another
    axis, sample-major — MobileViT's transformer layers run on (N·P, tokens, C), reshaped from
    (N, P, tokens, C): the k rows of a sample are averaged when pooled (the mean over all its
    patches' tokens, as for an unfolded (N, P·tokens, C)) and kept side by side when flattened.
    Only a ``foldable`` tap is read so: a unit's IR, on the residual stream by construction. Any
    other tensor whose length happens to be a multiple of the batch (T5's position bias, (T, T,
    heads), with T twice the CKA batch) belongs to no sample and has no batch axis."""
    if output.ndim < 1:
        return None
    leading = output.shape[0]
    if leading == count:
        return output.reshape(count, -1)
    fixed = isinstance(static_leading, int) and static_leading > 0
    if not foldable or fixed or count < 1 or leading % count or output.ndim < 2:
        return None
    grouped = output.reshape(count, leading // count, -1)
    return grouped.mean(axis=1) if pooled else grouped.reshape(count, -1)
