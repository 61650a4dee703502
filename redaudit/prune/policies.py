"""Which blocks to remove first: pruning policies, one class each.

A policy scores the candidate blocks of one model (higher = more redundant = removed first,
NaN = no evidence, ranked last) and chooses ``count`` of them. Most policies rank once and take
the first ``count``; a policy whose choice is not nested (a contiguous span, a greedy
re-measurement) overrides :meth:`choose`. How many blocks to remove (``--remove``,
``--target-params``, ``--max-drift``) is decided elsewhere (``redaudit.prune.select``), so any
policy combines with any stopping rule. Adding a policy is one class plus one line in
:data:`POLICIES`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from redaudit.core.prepared import PreparedModel
from redaudit.core.spec import ScanSpec
from redaudit.errors import ConfigError
from redaudit.prune.candidates import Block


@dataclass
class PolicyContext:
    """What a policy may look at: the prepared original, its candidate blocks, the scan spec
    and the probe arrays every measurement uses."""

    prepared: PreparedModel
    blocks: Sequence[Block]
    spec: ScanSpec
    arrays: Mapping[str, np.ndarray]
    _cache: dict[str, np.ndarray] = field(default_factory=dict)

    def cached(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def block_cka(self) -> np.ndarray:
        """CKA(block input, block output) per block, as scan measures it (the paper's a_l)."""
        from redaudit.prune.similarity import block_similarity

        return self.cached("cka", lambda: block_similarity(self.prepared, self.blocks, self.spec, self.arrays)[0])


def removal_order(scores: Sequence[float]) -> list[int]:
    """Block indices, highest score first; ties keep graph order, NaN last."""
    values = np.asarray(scores, dtype=np.float64)
    keyed = np.where(np.isnan(values), -np.inf, values)
    return [int(i) for i in np.argsort(-keyed, kind="stable")]


class PrunePolicy(Protocol):
    name: str
    description: str

    def scores(self, context: PolicyContext) -> np.ndarray:
        """One value per candidate block; shown by ``--list`` and used to rank."""

    def choose(self, context: PolicyContext, count: int) -> list[int]:
        """The ``count`` blocks to remove, in removal order."""


class RankingPolicy:
    """Base for nested choices: rank once by :meth:`scores`, take the first ``count``."""

    name = "ranking"
    description = ""

    def scores(self, context: PolicyContext) -> np.ndarray:
        raise NotImplementedError

    def choose(self, context: PolicyContext, count: int) -> list[int]:
        return removal_order(self.scores(context))[:count]


class CkaPolicy(RankingPolicy):
    """RedTest: remove the blocks whose output is most like their input (linear CKA)."""

    name = "cka"
    description = "CKA between each block's input and output (RedTest); most similar removed first"

    def scores(self, context: PolicyContext) -> np.ndarray:
        return context.block_cka()


@dataclass
class RandomPolicy(RankingPolicy):
    """A seeded random order: the baseline every other policy must beat."""

    seed: int = 0
    name = "random"
    description = "a seeded random order (baseline)"

    def scores(self, context: PolicyContext) -> np.ndarray:
        return np.random.default_rng(self.seed).random(len(context.blocks))


POLICIES: dict[str, Callable[[int], PrunePolicy]] = {
    "cka": lambda seed: CkaPolicy(),
    "random": lambda seed: RandomPolicy(seed),
}


def make_policy(name: str, seed: int = 0) -> PrunePolicy:
    if name not in POLICIES:
        raise ConfigError(f"unknown --policy {name!r}; choose one of {', '.join(POLICIES)}")
    return POLICIES[name](seed)
