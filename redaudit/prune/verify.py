"""How far a pruned model is from the original on the same probe inputs, and what it saves.

Agreement is measured per graph output over every probe sample: max absolute error, relative
error ‖pruned − original‖ / ‖original‖ (Frobenius, over all samples), mean cosine similarity of
the per-sample output vectors, and for 2-D (samples × classes) outputs top-1 agreement (the
share of samples whose argmax is unchanged; meaningful for classifiers). A causal language
model (an output ``logits`` of shape (N, T, V) fed token ids) is also verified token by token:
next-token top-1 agreement, KL(original ‖ pruned) and perplexities (:mod:`redaudit.prune.lm_metrics`).
Latency is measured for both models in the same process, alternating runs so that machine noise
hits both alike.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort

from redaudit.core.prepared import PreparedModel
from redaudit.core.run import BatchRunner
from redaudit.core.session_memory import micro_batch_for
from redaudit.errors import InferenceError
from redaudit.prune.kv_cache import is_cache_output
from redaudit.prune.lm_metrics import NextTokenAgreement, NextTokenStats, lm_inputs, lm_output_index
from redaudit.prune.surgery import PruneError


@dataclass(frozen=True)
class OutputAgreement:
    name: str
    max_abs_error: float
    relative_error: float
    cosine_mean: float
    cosine_min: float
    top1_agreement: float | None


@dataclass(frozen=True)
class Latency:
    """Median wall time of one run on ``batch`` samples, in milliseconds."""

    original_ms: float
    pruned_ms: float
    batch: int
    repeats: int

    @property
    def ratio(self) -> float:
        return self.pruned_ms / self.original_ms if self.original_ms > 0 else float("nan")


class Evaluator:
    """Runs models against the original's outputs on the probe arrays, on the prepared model's
    device (sessions come from its :class:`~redaudit.core.run.SessionFactory`). ``real_ids``: the
    probe's token ids are real text, so perplexities mean something (a causal LM only).

    Each chunk of ``chunk`` samples runs as micro-batches sized to ``max_memory_bytes`` (the
    scan's rule, :func:`~redaudit.core.session_memory.micro_batch_for`, on the original graph,
    holding the reference outputs and one run's outputs of every sample); a pruned model is
    smaller and runs with the same micro-batch."""

    def __init__(self, original: PreparedModel, arrays: Mapping[str, np.ndarray], chunk: int,
                 real_ids: bool = False, max_memory_bytes: int | None = None) -> None:
        self.arrays, self.chunk, self.sessions, self.real_ids = arrays, chunk, original.sessions, real_ids
        # A decoder's KV-cache outputs are its memory, not its answer, and a pruned model has fewer
        # of them, renumbered (redaudit.prune.kv_cache): the answer is compared, the cache is not.
        self.names = [output.name for output in original.proto.graph.output if not is_cache_output(output.name)]
        count = next(iter(arrays.values())).shape[0]
        self.micro_batch = micro_batch_for(original.proto, arrays, max_memory_bytes, chunk, fetch_names=self.names,
                                           held_samples=2 * count, what="verifying the pruned model")
        self.session = self._session(original.proto, "the original model")
        self.reference = self.run(self.session)
        self.ids_name, self.mask_name = lm_inputs(original.proto)
        self.lm_output = lm_output_index(self.names, arrays.get(self.ids_name or ""), self.reference)

    def _session(self, model: onnx.ModelProto, what: str) -> ort.InferenceSession:
        try:
            return self.sessions.create(model, what)[0]
        except InferenceError as error:
            raise PruneError(str(error)) from None

    def run(self, session: ort.InferenceSession) -> list[np.ndarray]:
        try:
            return BatchRunner(session, self.names, chunk=self.micro_batch).run_all(self.arrays, self.chunk)
        except InferenceError as error:
            raise PruneError(f"model does not run on the probe inputs: {error}") from None

    def agreement(self, pruned: onnx.ModelProto) -> tuple[list[OutputAgreement], ort.InferenceSession]:
        agreement, _, session = self.verify(pruned)
        return agreement, session

    def verify(self, pruned: onnx.ModelProto) -> tuple[list[OutputAgreement], NextTokenAgreement | None,
                                                        ort.InferenceSession]:
        """Per-output agreement, plus next-token agreement when the original is a causal LM."""
        session = self._session(pruned, "the pruned model")
        outputs = self.run(session)
        return compare_outputs(self.names, self.reference, outputs), self.next_token(outputs), session

    def next_token(self, outputs: list[np.ndarray]) -> NextTokenAgreement | None:
        if self.lm_output is None:
            return None
        stats = NextTokenStats()
        stats.update(self.reference[self.lm_output], outputs[self.lm_output], self.arrays[self.ids_name],
                     self.arrays.get(self.mask_name or ""))
        return stats.result(self.names[self.lm_output], self.real_ids)


def compare_outputs(names: list[str], original: list[np.ndarray], pruned: list[np.ndarray]) -> list[OutputAgreement]:
    out = []
    for name, ref, new in zip(names, original, pruned):
        ref64 = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
        new64 = np.asarray(new, dtype=np.float64).reshape(len(new), -1)
        diff = new64 - ref64
        norm = np.linalg.norm(ref64)
        dots = np.einsum("ij,ij->i", ref64, new64)
        lengths = np.linalg.norm(ref64, axis=1) * np.linalg.norm(new64, axis=1)
        cosine = np.where(lengths > 0, dots / np.where(lengths > 0, lengths, 1.0),
                          np.where(np.abs(diff).max(axis=1) == 0, 1.0, 0.0))
        top1 = None
        if ref.ndim == 2 and ref.shape[1] >= 2:
            top1 = float(np.mean(ref.argmax(axis=1) == new.argmax(axis=1)))
        out.append(OutputAgreement(
            name=name, max_abs_error=float(np.abs(diff).max()) if diff.size else 0.0,
            relative_error=float(np.linalg.norm(diff) / norm) if norm > 0 else float(np.linalg.norm(diff)),
            cosine_mean=float(cosine.mean()), cosine_min=float(cosine.min()), top1_agreement=top1))
    return out


def drift(agreement: list[OutputAgreement]) -> float:
    """1 − (worst output's mean cosine): 0 for identical outputs; what ``--max-drift`` bounds."""
    return 1.0 - min(item.cosine_mean for item in agreement)


def measure_latency(original: ort.InferenceSession, pruned: ort.InferenceSession,
                    probe: Mapping[str, np.ndarray], batch: int = 32, repeats: int = 20) -> Latency:
    count = next(iter(probe.values())).shape[0]
    batch = max(1, min(batch, count))
    feed = {name: np.ascontiguousarray(array[:batch]) for name, array in probe.items()}
    # A pruned decoder takes fewer KV-cache inputs than the original: each session gets its own.
    feeds = [{name: feed[name] for name in (item.name for item in session.get_inputs()) if name in feed}
             for session in (original, pruned)]
    times: dict[int, list[float]] = {0: [], 1: []}
    for session, own in zip((original, pruned), feeds):  # warm-up: first runs allocate and plan
        session.run(None, own)
    for _ in range(repeats):
        for key, session in ((0, original), (1, pruned)):
            begin = time.perf_counter()
            session.run(None, feeds[key])
            times[key].append(time.perf_counter() - begin)
    return Latency(original_ms=1e3 * float(np.median(times[0])), pruned_ms=1e3 * float(np.median(times[1])),
                   batch=batch, repeats=repeats)


def agreement_dicts(items: list[OutputAgreement]) -> list[dict]:
    return [asdict(item) for item in items]
