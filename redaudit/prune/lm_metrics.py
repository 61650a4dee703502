"""Next-token agreement of a pruned causal language model with the original, on held-out tokens.

What a reader of ShortGPT or SLEB asks of a pruned LM is not the cosine of its logits but:

* **top-1 agreement** — the share of predicted positions where the pruned model's most likely
  next token is the original's;
* **KL(original ‖ pruned)** — the mean, over those positions, of the KL divergence (nats) of the
  pruned model's next-token distribution from the original's (0 = the same distribution);
* **perplexity** of each model on the probe text: exp of the mean negative log-likelihood of the
  token that really follows. Only meaningful for real text: with synthetic (random) token ids
  both models face noise, so it is not reported (``None``) and the result says why.

Positions follow the attention mask (padding is ignored): a position is predicted when its own
token is real; it is scored for perplexity when the next token is real too. The mask may cover
a past as well (KV-cache layout): its last T entries belong to the T tokens fed.

Math is float64 and streamed over samples (:class:`NextTokenStats`), so a probe of
(N, T, V) logits never needs more than one chunk's log-softmax at a time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: The conventional mask input (token-level cosines read it) and the causal LM's output name.
ATTENTION_MASK = "attention_mask"
LOGITS = "logits"
#: Logit elements per float64 log-softmax chunk (32 MB each; a few temporaries of that size live at once).
_CHUNK_ELEMENTS = 2**22


@dataclass(frozen=True)
class NextTokenAgreement:
    """Pruned vs original next-token predictions; see the module doc for each number."""

    output: str
    positions: int
    top1_agreement: float
    kl_mean: float
    perplexity_original: float | None
    perplexity_pruned: float | None
    scored_positions: int

    @property
    def perplexity_ratio(self) -> float | None:
        if self.perplexity_original is None or self.perplexity_pruned is None:
            return None
        return self.perplexity_pruned / self.perplexity_original

    def to_dict(self) -> dict:
        return {"output": self.output, "positions": self.positions, "top1_agreement": self.top1_agreement,
                "kl_mean": self.kl_mean, "perplexity_original": self.perplexity_original,
                "perplexity_pruned": self.perplexity_pruned, "perplexity_ratio": self.perplexity_ratio,
                "scored_positions": self.scored_positions}


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def token_mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """(N, T) booleans: which fed tokens are real (the last T entries of a mask that covers a past)."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask)
    return mask.reshape(shape[0], -1)[:, -shape[1]:] != 0


@dataclass
class NextTokenStats:
    """Sums over chunks of samples; :meth:`result` turns them into a :class:`NextTokenAgreement`."""

    positions: int = 0
    agree: int = 0
    kl_sum: float = 0.0
    scored: int = 0
    nll_original: float = 0.0
    nll_pruned: float = 0.0

    def update(self, original: np.ndarray, pruned: np.ndarray, ids: np.ndarray | None,
               mask: np.ndarray | None) -> None:
        """Add one chunk: ``original``/``pruned`` logits (N, T, V), ``ids`` (N, T) or None, the mask."""
        count, length, vocab = original.shape
        per_chunk = max(1, _CHUNK_ELEMENTS // max(1, length * vocab))
        real = token_mask(mask, (count, length))
        for start in range(0, count, per_chunk):
            rows = slice(start, start + per_chunk)
            log_p = _log_softmax(np.asarray(original[rows], dtype=np.float64))
            log_q = _log_softmax(np.asarray(pruned[rows], dtype=np.float64))
            keep = real[rows]
            self.positions += int(keep.sum())
            self.agree += int((keep & (log_p.argmax(-1) == log_q.argmax(-1))).sum())
            kl = np.einsum("ntv,ntv->nt", np.exp(log_p), log_p - log_q)
            self.kl_sum += float(kl[keep].sum())
            if ids is None or length < 2:
                continue
            nexts = np.asarray(ids[rows])[:, 1:]
            scored = keep[:, :-1] & keep[:, 1:]
            take = nexts[..., None]
            self.scored += int(scored.sum())
            self.nll_original -= float(np.take_along_axis(log_p[:, :-1], take, -1)[..., 0][scored].sum())
            self.nll_pruned -= float(np.take_along_axis(log_q[:, :-1], take, -1)[..., 0][scored].sum())

    def result(self, output: str, real_ids: bool) -> NextTokenAgreement:
        def perplexity(nll: float) -> float | None:
            return math.exp(nll / self.scored) if real_ids and self.scored else None

        positions = max(self.positions, 1)
        return NextTokenAgreement(output=output, positions=self.positions, top1_agreement=self.agree / positions,
                                  kl_mean=self.kl_sum / positions, perplexity_original=perplexity(self.nll_original),
                                  perplexity_pruned=perplexity(self.nll_pruned),
                                  scored_positions=self.scored if real_ids else 0)


def next_token_agreement(original: np.ndarray, pruned: np.ndarray, ids: np.ndarray | None = None,
                         mask: np.ndarray | None = None, *, real_ids: bool = True,
                         output: str = LOGITS) -> NextTokenAgreement:
    """Top-1 agreement, mean KL and perplexities for whole (N, T, V) logit arrays."""
    stats = NextTokenStats()
    stats.update(original, pruned, ids, mask)
    return stats.result(output, real_ids and ids is not None)


def lm_inputs(model) -> tuple[str | None, str | None]:
    """(token ids input, attention mask input) by their language-model roles (names or, for the
    ids, the embedding lookup they feed: :func:`redaudit.core.lm_inputs.input_roles`)."""
    from redaudit.core import lm_inputs as conventions

    roles = conventions.input_roles(model, [item.name for item in model.graph.input])
    by_role = {role.role: name for name, role in roles.items()}
    return by_role.get(conventions.TOKEN_IDS), by_role.get(conventions.MASK)


def lm_output_index(output_names: list[str], ids: np.ndarray | None, outputs: list[np.ndarray]) -> int | None:
    """Position of the causal-LM logits among a model's outputs — an output named ``logits``
    that is (N, T, V) with T the fed token count — or None: the model is not verified as an LM."""
    if ids is None or LOGITS not in output_names:
        return None
    position = output_names.index(LOGITS)
    logits = outputs[position]
    if logits.ndim != 3 or logits.shape[:2] != np.shape(ids)[:2] or logits.shape[2] < 2:
        return None
    return position


def looks_like_causal_lm(model) -> bool:
    """From the graph alone: a token ids input and a rank-3 (or unknown-rank) ``logits`` output.
    Used to check LM-only requests before any run; :func:`lm_output_index` decides at run time."""
    if lm_inputs(model)[0] is None:
        return False
    for output in model.graph.output:
        if output.name == LOGITS:
            shape = output.type.tensor_type.shape
            return not output.type.tensor_type.HasField("shape") or len(shape.dim) == 3
    return False
