"""Choose the final model from a finished search, by the two rules the paper compares.

``accuracy``: the standard practice, the best early (validation) accuracy.
``redundancy-aware``: among the candidates whose validation accuracy is within ``tolerance``
(default 1 point) of the best, the one with the lowest MSRS. Ties fall to fewer parameters,
then to the earlier trial, so a choice is reproducible. Only validation numbers decide;
test accuracy is reported, never used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from redaudit.errors import ConfigError

RULES = ("redundancy-aware", "accuracy")


@dataclass(frozen=True)
class Candidate:
    """The fields selection and reporting need from one finished trial."""

    number: int
    val_accuracy: float
    test_accuracy: float
    msrs: float
    parameters: int
    flops: int
    latency_ms: float
    architecture: dict[str, Any]
    duplicate_of: int | None = None

    @classmethod
    def from_trial(cls, trial: Any) -> "Candidate":
        attrs = trial.user_attrs
        return cls(number=trial.number, val_accuracy=float(attrs["val_accuracy"]),
                   test_accuracy=float(attrs["test_accuracy"]), msrs=float(attrs["msrs"]),
                   parameters=int(attrs["parameters"]), flops=int(attrs["flops"]),
                   latency_ms=float(attrs["latency_ms"]), architecture=dict(attrs["architecture"]),
                   duplicate_of=attrs.get("duplicate_of"))


def candidates_of(study: Any) -> list[Candidate]:
    """Completed trials that carry measurements (duplicates included: they were sampled too)."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [Candidate.from_trial(t) for t in complete if "val_accuracy" in t.user_attrs]


def select(candidates: list[Candidate], rule: str, tolerance: float = 0.01) -> Candidate:
    """The chosen candidate under ``rule``; ``tolerance`` is a fraction (0.01 = 1 point)."""
    if rule not in RULES:
        raise ConfigError(f"selection rule must be one of {list(RULES)}, got {rule!r}")
    if not candidates:
        raise ConfigError("the study has no completed trials to choose from")
    if not 0 <= tolerance <= 1:  # also false for nan, which would turn this rule into the accuracy rule
        raise ConfigError(f"tolerance must be a fraction in [0, 1], got {tolerance}")
    best = max(c.val_accuracy for c in candidates)
    if rule == "accuracy":
        return min(candidates, key=lambda c: (-c.val_accuracy, c.number))
    accurate = [c for c in candidates if c.val_accuracy >= best - tolerance - 1e-12 and math.isfinite(c.msrs)]
    if not accurate:  # every accurate candidate has NaN MSRS: fall back to accuracy, visibly
        return select(candidates, "accuracy")
    return min(accurate, key=lambda c: (c.msrs, c.parameters, c.number))


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """Non-dominated candidates for (max validation accuracy, min MSRS), by accuracy descending."""
    finite = [c for c in candidates if math.isfinite(c.msrs)]
    front = []
    for c in finite:
        dominated = any((o.val_accuracy >= c.val_accuracy and o.msrs <= c.msrs)
                        and (o.val_accuracy > c.val_accuracy or o.msrs < c.msrs) for o in finite)
        if not dominated:
            front.append(c)
    unique: dict[tuple[float, float], Candidate] = {}
    for c in sorted(front, key=lambda c: (-c.val_accuracy, c.msrs, c.number)):
        unique.setdefault((c.val_accuracy, c.msrs), c)  # duplicates of one point: show the first
    return list(unique.values())
