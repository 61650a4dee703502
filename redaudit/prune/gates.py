"""The bounds a pruned model must keep before it is written or recorded, checked in one place.

A request is checked before any work (a negative bound, an LM bound on a model that is not an LM,
perplexity on synthetic ids); the measured result after verification.
"""
from __future__ import annotations

from dataclasses import dataclass

from redaudit.prune.result import PruneResult
from redaudit.prune.errors import PruneError


@dataclass(frozen=True)
class Gates:
    """The bounds a pruned model must keep to be written or recorded (None = not checked).
    ``min_top1``: top-1 agreement — a classifier's per sample, a causal LM's per next token;
    ``max_kl``: mean KL(original ‖ pruned) of next-token distributions, nats;
    ``max_ppl_increase``: percent by which perplexity may grow (15 → pruned ≤ 1.15 × original)."""

    min_cosine: float | None = 0.9
    min_top1: float | None = None
    max_kl: float | None = None
    max_ppl_increase: float | None = None

    def check_request(self) -> None:
        if self.max_kl is not None and not self.max_kl >= 0:
            raise PruneError(f"--max-kl is a KL divergence in nats, 0 or more; got {self.max_kl:g}")
        if self.max_ppl_increase is not None and not self.max_ppl_increase >= 0:
            raise PruneError(f"--max-ppl-increase is a percentage, 0 or more; got {self.max_ppl_increase:g}")

    def check_model(self, is_lm: bool, real_ids: bool) -> None:
        """LM gates on a model that is not a causal LM, or perplexity on synthetic ids, fail now."""
        lm_only = [name for name, value in (("--max-kl", self.max_kl), ("--max-ppl-increase", self.max_ppl_increase))
                   if value is not None]
        if lm_only and not is_lm:
            raise PruneError(f"{' and '.join(lm_only)} bound a causal language model's next-token predictions, and "
                             "this model has no 'logits' output of shape (batch, tokens, vocabulary) fed by "
                             "'input_ids'; use --min-cosine / --min-top1")
        if self.max_ppl_increase is not None and not real_ids:
            raise PruneError("--max-ppl-increase needs real token ids: perplexity on synthetic (random) ids means "
                             "nothing; pass --inputs tokens.npz (or --text FILE --tokenizer DIR)")

    def misses(self, result: PruneResult) -> list[str]:
        misses = []
        worst = min(item.cosine_mean for item in result.agreement)
        if self.min_cosine is not None and worst < self.min_cosine:
            misses.append(f"output cosine {worst:.3f} is below --min-cosine {self.min_cosine:g} "
                          f"by {self.min_cosine - worst:.3f}")
        tops = [item.top1_agreement for item in result.agreement if item.top1_agreement is not None]
        lm = result.next_token
        if lm is not None:
            tops.append(lm.top1_agreement)
        if self.min_top1 is not None and tops and min(tops) < self.min_top1:
            misses.append(f"top-1 agreement {min(tops):.3f} is below --min-top1 {self.min_top1:g} "
                          f"by {self.min_top1 - min(tops):.3f}")
        if lm is not None and self.max_kl is not None and lm.kl_mean > self.max_kl:
            misses.append(f"next-token KL {lm.kl_mean:.4f} is above --max-kl {self.max_kl:g}")
        ratio = None if lm is None else lm.perplexity_ratio
        if ratio is not None and self.max_ppl_increase is not None and ratio > 1 + self.max_ppl_increase / 100:
            misses.append(f"perplexity grew {100 * (ratio - 1):.1f}%, above --max-ppl-increase "
                          f"{self.max_ppl_increase:g}%")
        return misses


def check_agreement(result: PruneResult, gates: Gates, force: bool, writes: bool) -> None:
    """The safety bound: a pruned model that no longer computes what the original did is not
    written (or recorded) unless ``force``; without an output it is a warning."""
    misses = gates.misses(result)
    if not misses:
        return
    text = "; ".join(misses)
    if writes and not force:
        raise PruneError(f"{text}; nothing written — remove fewer blocks, try --heal linear, or pass --force")
    result.warnings.append(text + ("" if writes else " (nothing is written without -o)"))
