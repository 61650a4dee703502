"""Which blocks a prune removes: a one-shot plan from a policy and a stopping rule, the drift
limit on that plan, or the iterative loop that re-scores (and heals) after each removal.

Separate from :mod:`redaudit.prune.api`, which sequences the stages around these decisions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from redaudit.core.graph import parameter_count
from redaudit.prune import select
from redaudit.prune.candidates import Block, find_candidates, granularity_of
from redaudit.prune.cost import block_costs
from redaudit.prune.policies import PolicyContext, PrunePolicy
from redaudit.prune.errors import PruneError
from redaudit.prune.surgery import remove_blocks
from redaudit.prune.verify import Evaluator, drift


def plan(context: PolicyContext, policy: PrunePolicy, *, remove: int | None, target_params: float | None,
          max_drift: float | None, names: Sequence[str] | None) -> list[int]:
    blocks = context.blocks
    if names:
        chosen = select.resolve_names(blocks, names)
        select.check_not_everything(len(chosen), len(blocks))
        return chosen
    if remove is not None:
        select.check_not_everything(remove, len(blocks))
        return policy.choose(context, remove)
    if target_params is not None:
        costs, total, _ = block_costs(context.prepared.proto, context.prepared.index, blocks)
        return select.until_params(lambda count: policy.choose(context, count), [p for p, _ in costs],
                                   total, target_params, len(blocks))
    if max_drift is not None:
        return policy.choose(context, len(blocks) - 1)
    raise PruneError("say what to remove: --remove N, --target-params PCT, --max-drift X or --blocks NAMES "
                     "(or --list to see the candidates)")


def check_request(blocks: Sequence[Block], *, remove: int | None, target_params: float | None,
                   max_drift: float | None, names: Sequence[str] | None) -> None:
    if names:
        select.check_not_everything(len(select.resolve_names(blocks, names)), len(blocks))
    elif remove is not None:
        select.check_not_everything(remove, len(blocks))
    elif target_params is not None:
        if not 0 < target_params < 100:
            raise PruneError(f"--target-params must be a percentage between 0 and 100, got {target_params:g}")
    elif max_drift is None:
        raise PruneError("say what to remove: --remove N, --target-params PCT, --max-drift X or --blocks NAMES "
                         "(or --list to see the candidates)")


def limit_by_drift(model: onnx.ModelProto, blocks: Sequence[Block], plan: list[int], bound: float,
                    evaluator: Evaluator) -> list[int]:
    """The longest prefix of ``plan`` whose pruned model stays within ``bound`` drift."""
    kept = 0
    for count in range(1, len(plan) + 1):
        agreement, _ = evaluator.agreement(remove_blocks(model, [blocks[i] for i in plan[:count]]))
        if drift(agreement) > bound:
            break
        kept = count
    if kept == 0:
        raise PruneError(f"removing even the most redundant block ({blocks[plan[0]].name}) drifts the outputs "
                         f"beyond --max-drift {bound:g}; nothing written")
    return plan[:kept]


def iterate(context: PolicyContext, policy: PrunePolicy, *, remove: int | None, target_params: float | None,
             max_drift: float | None, evaluator: Evaluator, calibration: Mapping[str, np.ndarray] | None = None,
             attention_mix: bool = False) -> tuple[onnx.ModelProto, list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Remove one block at a time, re-finding candidates and re-scoring after each removal.

    With ``calibration`` each removed block is healed at once (:func:`heal_step`: the map reads
    what the model pruned so far produces, fitted to the original's exit), so the next choice and
    the drift bound see the healed model; the maps themselves are never candidates.
    ``attention_mix``: the maps also mix tokens through the upstream attention (``--heal attention``)."""
    from redaudit.prune.heal import HealOptions, heal_nodes_only, heal_step

    heal_options = HealOptions(attention_mix=attention_mix, max_memory_bytes=context.spec.max_memory_bytes,
                               cancel=context.cancel)

    if remove is not None:
        select.check_not_everything(remove, len(context.blocks))
    elif target_params is None and max_drift is None:
        raise PruneError("--iterative needs --remove N, --target-params PCT or --max-drift X")
    total = parameter_count(context.prepared.proto)
    current = context
    removed: list[str] = []
    steps: list[dict[str, Any]] = []
    healed: list[dict[str, Any]] = []
    while True:
        proto = current.prepared.proto
        if remove is not None and len(removed) >= remove:
            break
        if target_params is not None and parameter_count(proto) <= total * target_params / 100.0:
            break
        if len(current.blocks) <= 1:
            if max_drift is not None and remove is None and target_params is None:
                break
            raise PruneError("cannot go on without removing every removable block; ask for fewer removals")
        best = policy.choose(current, 1)[0]
        block = current.blocks[best]
        span = None
        if calibration is None:
            candidate = remove_blocks(proto, [block])
        else:
            candidate, span = heal_step(context.prepared.proto, proto, block, calibration, heal_options,
                                        context.prepared.sessions.folder)
        if max_drift is not None:
            agreement, _ = evaluator.agreement(candidate)
            if drift(agreement) > max_drift:
                if not removed:
                    raise PruneError(f"removing even the most redundant block ({block.name}) drifts the "
                                     f"outputs beyond --max-drift {max_drift:g}; nothing written")
                break
        score = policy.scores(current)[best]
        steps.append({"block": block.name, "similarity": float(score), "candidates": len(current.blocks)})
        if span is not None:
            healed.append({**span.to_dict(), "fitted_after": list(removed)})
        removed.append(block.name)
        prepared = context.prepared.derived(candidate)
        blocks = [b for b in find_candidates(candidate, prepared.index, granularity_of(current.spec.level))
                  if not heal_nodes_only(b)]
        current = PolicyContext(prepared, blocks, current.spec, current.arrays, current.cancel)
    return current.prepared.proto, removed, steps, healed
