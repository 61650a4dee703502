"""Which blocks to remove: the paper's rule and the stopping criteria around it.

RedTest keeps the k blocks least similar to their predecessor, i.e. removes the blocks whose
output is most like their input first. A block whose similarity could not be measured (NaN,
a degenerate IR) is ranked last: no evidence it is redundant.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from redaudit.prune.candidates import Block
from redaudit.prune.surgery import PruneError


def removal_order(scores: Sequence[float]) -> list[int]:
    """Block indices, most similar to its input first; ties keep graph order, NaN last."""
    values = np.asarray(scores, dtype=np.float64)
    keyed = np.where(np.isnan(values), -np.inf, values)
    return [int(i) for i in np.argsort(-keyed, kind="stable")]


def resolve_names(blocks: Sequence[Block], names: Sequence[str]) -> list[int]:
    """Indices of the named blocks (exit tensor name, or the number shown by ``--list``)."""
    by_name = {block.name: i for i, block in enumerate(blocks)}
    chosen: list[int] = []
    for raw in names:
        name = raw.strip()
        if name in by_name:
            index = by_name[name]
        elif name.isdigit() and int(name) < len(blocks):
            index = int(name)
        else:
            raise PruneError(f"unknown block {name!r}; list the removable blocks with --list")
        if index not in chosen:
            chosen.append(index)
    return chosen


def check_not_everything(count: int, available: int) -> None:
    if count >= available:
        raise PruneError(f"refusing to remove all {available} removable block(s); "
                         "keep at least one (use a smaller --remove)")
    if count < 1:
        raise PruneError("nothing to remove: --remove must be at least 1")


def first_n(order: Sequence[int], count: int) -> list[int]:
    check_not_everything(count, len(order))
    return list(order[:count])


def until_params(order: Sequence[int], block_params: Sequence[int], total_params: int,
                 target_percent: float) -> list[int]:
    """Remove in ``order`` until the model keeps at most ``target_percent`` % of its parameters."""
    if not 0 < target_percent < 100:
        raise PruneError(f"--target-params must be a percentage between 0 and 100, got {target_percent:g}")
    limit = total_params * target_percent / 100.0
    remaining = total_params
    chosen: list[int] = []
    for index in order:
        if remaining <= limit:
            break
        if len(chosen) == len(order) - 1:
            reachable = 100.0 * remaining / max(total_params, 1)
            raise PruneError(f"cannot reach {target_percent:g}% of the parameters without removing every "
                             f"removable block (the most that keeps one is {reachable:.1f}%)")
        chosen.append(index)
        remaining -= block_params[index]
    return chosen
