"""How many blocks to remove: names, counts and parameter targets around a policy's choice.

Which blocks is a policy's job (:mod:`redaudit.prune.policies`); this module turns the user's
stopping rule into a count and checks it leaves something.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence


from redaudit.prune.candidates import Block
from redaudit.prune.errors import PruneError


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


def until_params(choose: Callable[[int], Sequence[int]], block_params: Sequence[int], total_params: int,
                 target_percent: float, available: int) -> list[int]:
    """The smallest removal ``choose(k)`` (a policy's choice of k blocks) that leaves at most
    ``target_percent`` % of the parameters; refuses when only removing every block would."""
    if not 0 < target_percent < 100:
        raise PruneError(f"--target-params must be a percentage between 0 and 100, got {target_percent:g}")
    limit = total_params * target_percent / 100.0
    remaining = total_params
    for count in range(1, available):
        chosen = list(choose(count))
        remaining = total_params - sum(block_params[i] for i in chosen)
        if remaining <= limit:
            return chosen
    reachable = 100.0 * remaining / max(total_params, 1)
    raise PruneError(f"cannot reach {target_percent:g}% of the parameters without removing every "
                     f"removable block (the most that keeps one is {reachable:.1f}%)")
