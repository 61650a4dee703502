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
from typing import Any, Protocol

import numpy as np

from redaudit.core.cancel import CancelCheck
from redaudit.core.prepared import PreparedModel
from redaudit.core.spec import ScanSpec
from redaudit.errors import ConfigError
from redaudit.prune.candidates import Block
from redaudit.prune.errors import PruneError


@dataclass
class PolicyContext:
    """What a policy may look at: the prepared original, its candidate blocks, the scan spec
    and the probe arrays every measurement uses; ``cancel``, the prune's cancel hook, goes to
    every measurement that runs the model (polled before each onnxruntime run)."""

    prepared: PreparedModel
    blocks: Sequence[Block]
    spec: ScanSpec
    arrays: Mapping[str, np.ndarray]
    cancel: CancelCheck | None = None
    _cache: dict[str, Any] = field(default_factory=dict)

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def block_cka(self) -> np.ndarray:
        """CKA(block input, block output) per block, as scan measures it (the paper's a_l)."""
        from redaudit.prune.similarity import block_similarity

        return self.cached("cka", lambda: block_similarity(self.prepared, self.blocks, self.spec, self.arrays,
                                                           self.cancel)[0])


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


class BlockInfluencePolicy(RankingPolicy):
    """ShortGPT's Block Influence (arXiv 2403.03853): BI = 1 − mean cosine of a block's input
    and output, token by token; the blocks that change their input least go first. The score
    shown is the mean cosine (1 − BI)."""

    name = "bi"
    description = "mean cosine of each block's input and output, token by token (1 - Block Influence)"

    def scores(self, context: PolicyContext) -> np.ndarray:
        from redaudit.prune.activations import pair_cosines

        return context.cached("bi", lambda: pair_cosines(
            context.prepared, [(block.entry, block.exit) for block in context.blocks], context.arrays,
            context.spec.max_memory_bytes, context.cancel))


def consecutive_runs(blocks: Sequence[Block]) -> list[list[int]]:
    """Maximal runs of consecutive blocks (each entry the previous exit), as indices."""
    from redaudit.prune.candidates import chains

    position = {id(block): i for i, block in enumerate(blocks)}
    return sorted([position[id(block)] for block in chain] for chain in chains(list(blocks)))


class AngularPolicy:
    """Gromov et al. (arXiv 2403.17887): remove the contiguous span of n blocks whose entry and
    exit are closest in angular distance arccos(cos)/π. Not nested: the best span of 3 need not
    contain the best span of 2. The score shown is one block's own angular distance, negated
    (closest first)."""

    name = "angular"
    description = "contiguous span whose input and output are closest in angular distance (Gromov et al.)"

    def scores(self, context: PolicyContext) -> np.ndarray:
        return -self._distances(context, [(i, i) for i in range(len(context.blocks))])

    def _distances(self, context: PolicyContext, spans: list[tuple[int, int]]) -> np.ndarray:
        from redaudit.prune.activations import pair_cosines

        key = f"angular:{spans}"
        pairs = [(context.blocks[first].entry, context.blocks[last].exit) for first, last in spans]
        cosines = context.cached(key, lambda: pair_cosines(context.prepared, pairs, context.arrays,
                                                           context.spec.max_memory_bytes, context.cancel))
        return np.arccos(np.clip(cosines, -1.0, 1.0)) / np.pi

    def choose(self, context: PolicyContext, count: int) -> list[int]:
        spans = [(run[start], run[start + count - 1]) for run in consecutive_runs(context.blocks)
                 for start in range(len(run) - count + 1)]
        if not spans:
            longest = max(len(run) for run in consecutive_runs(context.blocks))
            raise ConfigError(f"--policy angular removes a contiguous span, and the longest run of "
                              f"consecutive blocks here is {longest}; ask for at most {longest}")
        distances = self._distances(context, spans)
        first, last = spans[int(np.nanargmin(np.where(np.isnan(distances), np.inf, distances)))]
        return list(range(first, last + 1))


@dataclass
class GreedyPolicy:
    """SLEB (arXiv 2402.09025): remove, one at a time, the block whose removal changes the
    model's output least, measured again after each removal on up to 512 probe samples: for a
    causal LM by the mean next-token KL(original ‖ pruned) (SLEB's own measure is perplexity; KL
    needs no real text), otherwise by the output cosine. Nested: the choice of k + 1 extends the choice of k. Its state lives in the
    context, so one policy object serves several models (``--iterative``)."""

    max_samples: int = 512
    name = "greedy"
    description = ("the block whose removal changes the output least (a causal LM's next-token KL), "
                   "re-measured after each removal (SLEB)")

    def _evaluator(self, context: PolicyContext):
        from redaudit.prune.verify import Evaluator

        arrays = {name: array[:self.max_samples] for name, array in context.arrays.items()}
        return context.cached("greedy-evaluator",
                              lambda: Evaluator(context.prepared, arrays, context.spec.cka_batch or 256,
                                                max_memory_bytes=context.spec.max_memory_bytes,
                                                cancel=context.cancel))

    def _step(self, context: PolicyContext, removed: list[int]) -> np.ndarray:
        """Output agreement (1 − drift; −KL for a causal LM) after removing ``removed`` plus each
        other block."""
        from redaudit.prune.surgery import remove_blocks
        from redaudit.prune.verify import drift

        evaluator = self._evaluator(context)
        scores = np.full(len(context.blocks), np.nan)
        for i, block in enumerate(context.blocks):
            if i in removed:
                continue
            try:
                pruned = remove_blocks(context.prepared.proto, [context.blocks[j] for j in removed] + [block])
            except PruneError:
                continue
            agreement, next_token, _ = evaluator.verify(pruned)
            scores[i] = -next_token.kl_mean if next_token is not None else 1.0 - drift(agreement)
        return scores

    def scores(self, context: PolicyContext) -> np.ndarray:
        return context.cached("greedy-first", lambda: self._step(context, []))

    def choose(self, context: PolicyContext, count: int) -> list[int]:
        sequence: list[int] = context.cached("greedy-sequence", list)  # type: ignore[arg-type]
        while len(sequence) < count:
            scores = self.scores(context) if not sequence else self._step(context, sequence)
            if np.all(np.isnan(scores)):
                break
            sequence.append(int(np.nanargmax(scores)))
        return sequence[:count]


POLICIES: dict[str, Callable[[int], PrunePolicy]] = {
    "cka": lambda seed: CkaPolicy(),
    "random": lambda seed: RandomPolicy(seed),
    "bi": lambda seed: BlockInfluencePolicy(),
    "angular": lambda seed: AngularPolicy(),
    "greedy": lambda seed: GreedyPolicy(),
}


def make_policy(name: str, seed: int = 0) -> PrunePolicy:
    if name not in POLICIES:
        raise ConfigError(f"unknown --policy {name!r}; choose one of {', '.join(POLICIES)}")
    return POLICIES[name](seed)
