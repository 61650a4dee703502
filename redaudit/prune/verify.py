"""How far a pruned model is from the original on the same probe inputs, and what it saves.

Agreement is measured per graph output over every probe sample: max absolute error, relative
error ‖pruned − original‖ / ‖original‖ (Frobenius, over all samples), mean cosine similarity of
the per-sample output vectors, and for 2-D (samples × classes) outputs top-1 agreement (the
share of samples whose argmax is unchanged; meaningful for classifiers). A causal language
model (an output ``logits`` of shape (N, T, V) fed token ids) is also verified token by token:
next-token top-1 agreement, KL(original ‖ pruned) and perplexities (:mod:`redaudit.prune.lm_metrics`).
Latency is measured for both models in the same process, alternating runs so that machine noise
hits both alike (for a large model, alternating rounds with one session alive at a time: see
:data:`ALTERNATE_RUNS_BELOW`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from redaudit.core.cancel import CancelCheck, before_each_run
from redaudit.core.memory import session_weight_bytes
from redaudit.core.prepared import PreparedModel
from redaudit.core.run import BatchRunner, session_feed
from redaudit.core.session_memory import micro_batch_for
from redaudit.errors import InferenceError
from redaudit.prune.kv_cache import is_cache_output
from redaudit.prune.lm_metrics import NextTokenAgreement, NextTokenStats, lm_inputs, lm_output_index
from redaudit.prune.errors import PruneError


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
    smaller and runs with the same micro-batch.

    The original's session is not kept once its outputs are: a session holds a copy of the
    weights (onnxruntime packs them), and a large model's prune must not hold one per stage.
    :meth:`original_session` makes it again when latency is measured.

    ``cancel`` (the prune's cancel hook) is polled before every onnxruntime run, the reference
    runs made here and the latency runs included."""

    def __init__(self, original: PreparedModel, arrays: Mapping[str, np.ndarray], chunk: int,
                 real_ids: bool = False, max_memory_bytes: int | None = None,
                 cancel: CancelCheck | None = None) -> None:
        self.arrays, self.chunk, self.sessions, self.real_ids = arrays, chunk, original.sessions, real_ids
        self.before_run = before_each_run(cancel, "prune")
        self.original = original.proto
        # A decoder's KV-cache outputs are its memory, not its answer, and a pruned model has fewer
        # of them, renumbered (redaudit.prune.kv_cache): the answer is compared, the cache is not.
        self.names = [output.name for output in original.proto.graph.output if not is_cache_output(output.name)]
        count = next(iter(arrays.values())).shape[0]
        self.micro_batch = micro_batch_for(original.proto, arrays, max_memory_bytes, chunk, fetch_names=self.names,
                                           held_samples=2 * count, what="verifying the pruned model")
        self.reference = self.run(self.original_session())
        self.ids_name, self.mask_name = lm_inputs(original.proto)
        self.lm_output = lm_output_index(self.names, arrays.get(self.ids_name or ""), self.reference)

    def original_session(self) -> ort.InferenceSession:
        return self._session(self.original, "the original model")

    def _session(self, model: onnx.ModelProto, what: str) -> ort.InferenceSession:
        try:
            return self.sessions.create(model, what)[0]
        except InferenceError as error:
            raise PruneError(str(error)) from None

    def latency(self, pruned: onnx.ModelProto, pruned_session: ort.InferenceSession | None, batch: int,
                repeats: int) -> Latency:
        """Latency of the original and ``pruned``: alternating runs with ``pruned_session`` and the
        original's session made again when :func:`alternates_runs`; otherwise (the caller passes
        None and holds no session) in rounds with one session alive at a time."""
        if pruned_session is not None and alternates_runs(self.original, pruned):
            return measure_latency(self.original_session(), pruned_session, self.arrays, batch, repeats,
                                   before_run=self.before_run)
        return latency_in_rounds(self.original_session, lambda: self._session(pruned, "the pruned model"),
                                 self.arrays, batch, repeats, before_run=self.before_run)

    def _chunks(self, session: ort.InferenceSession) -> Iterator[tuple[slice, list[np.ndarray]]]:
        """(rows, every output of those rows) for chunks of ``chunk`` samples, each run as micro-batches."""
        runner = BatchRunner(session, self.names, chunk=self.micro_batch, before_run=self.before_run)
        count = next(iter(self.arrays.values())).shape[0]
        for start in range(0, count, self.chunk):
            rows = slice(start, min(start + self.chunk, count))
            try:
                outputs = runner.run({name: array[rows] for name, array in self.arrays.items()})
            except InferenceError as error:
                raise PruneError(f"model does not run on the probe inputs: {error}") from None
            yield rows, outputs

    def run(self, session: ort.InferenceSession) -> list[np.ndarray]:
        """Every output for every sample, written chunk by chunk into one array per output (joining
        chunks at the end would hold a second copy of a language model's logits for a moment)."""
        whole: list[np.ndarray | list[np.ndarray]] = []
        count = next(iter(self.arrays.values())).shape[0]
        for rows, outputs in self._chunks(session):
            if not whole:  # an output without a sample axis is joined as before
                whole = [np.empty((count, *output.shape[1:]), output.dtype)
                         if output.ndim and output.shape[0] == rows.stop - rows.start else [] for output in outputs]
            for target, output in zip(whole, outputs):
                if isinstance(target, list):
                    target.append(output)
                else:
                    target[rows] = output
        return [np.concatenate(target) if isinstance(target, list) else target for target in whole]

    def agreement(self, pruned: onnx.ModelProto) -> tuple[list[OutputAgreement], ort.InferenceSession]:
        agreement, _, session = self.verify(pruned)
        return agreement, session

    def verify(self, pruned: onnx.ModelProto) -> tuple[list[OutputAgreement], NextTokenAgreement | None,
                                                        ort.InferenceSession]:
        """Per-output agreement, plus next-token agreement when the original is a causal LM,
        accumulated chunk by chunk: the pruned model's outputs are never held for every sample."""
        session = self._session(pruned, "the pruned model")
        sums = [AgreementSums() for _ in self.names]
        stats = NextTokenStats() if self.lm_output is not None else None
        ids, mask = self.arrays.get(self.ids_name or ""), self.arrays.get(self.mask_name or "")
        for rows, outputs in self._chunks(session):
            for total, reference, output in zip(sums, self.reference, outputs):
                total.update(reference[rows], output)
            if stats is not None:
                stats.update(self.reference[self.lm_output][rows], outputs[self.lm_output], ids[rows],
                             None if mask is None else mask[rows])
        agreement = [total.result(name) for total, name in zip(sums, self.names)]
        next_token = None if stats is None else stats.result(self.names[self.lm_output], self.real_ids)
        return agreement, next_token, session


#: Float64 elements of one comparison piece (32 MB): a language model's logits are about a million
#: per sample, and a few temporaries of a piece live at once.
_PIECE_ELEMENTS = 2**22


@dataclass
class AgreementSums:
    """One output's agreement summed over chunks of samples, so that verification never holds the
    pruned model's outputs of every sample (a language model's logits are hundreds of MB)."""

    max_abs: float = 0.0
    squared_diff: float = 0.0
    squared_ref: float = 0.0
    cosines: list[np.ndarray] = field(default_factory=list)
    top1_same: int = 0
    classifier: bool | None = None  # 2-D (samples × classes) outputs also get top-1 agreement

    def update(self, ref: np.ndarray, new: np.ndarray, chunk: int = 16) -> None:
        """Add samples ``ref``/``new`` (same shape), in float64 over at most ``chunk`` samples and
        :data:`_PIECE_ELEMENTS` elements at a time."""
        count = len(ref)
        per_sample = max(1, int(np.prod(ref.shape[1:], dtype=np.int64)))
        step = max(1, min(chunk, _PIECE_ELEMENTS // per_sample))
        for start in range(0, count, step):
            ref64 = np.asarray(ref[start:start + step], dtype=np.float64).reshape(min(step, count - start), -1)
            new64 = np.asarray(new[start:start + step], dtype=np.float64).reshape(ref64.shape[0], -1)
            diff = new64 - ref64
            if diff.size:
                self.max_abs = max(self.max_abs, float(np.abs(diff).max()))
            self.squared_diff += float(np.einsum("ij,ij->", diff, diff))
            self.squared_ref += float(np.einsum("ij,ij->", ref64, ref64))
            dots = np.einsum("ij,ij->i", ref64, new64)
            lengths = np.linalg.norm(ref64, axis=1) * np.linalg.norm(new64, axis=1)
            unchanged = np.abs(diff).max(axis=1) == 0 if diff.shape[1] else np.ones(len(diff), bool)
            self.cosines.append(np.where(lengths > 0, dots / np.where(lengths > 0, lengths, 1.0),
                                         np.where(unchanged, 1.0, 0.0)))
        self.classifier = ref.ndim == 2 and ref.shape[1] >= 2
        if self.classifier:
            self.top1_same += int(np.sum(ref.argmax(axis=1) == new.argmax(axis=1)))

    def result(self, name: str) -> OutputAgreement:
        cosine = np.concatenate(self.cosines) if self.cosines else np.ones(0)
        norm, diff_norm = np.sqrt(self.squared_ref), np.sqrt(self.squared_diff)
        return OutputAgreement(
            name=name, max_abs_error=self.max_abs,
            relative_error=float(diff_norm / norm) if norm > 0 else float(diff_norm),
            cosine_mean=float(cosine.mean()), cosine_min=float(cosine.min()),
            top1_agreement=self.top1_same / len(cosine) if self.classifier else None)


def compare_outputs(names: list[str], original: list[np.ndarray], pruned: list[np.ndarray],
                    chunk: int = 16) -> list[OutputAgreement]:
    """Agreement per output, in float64 over ``chunk`` samples at a time (fewer for large samples):
    whole float64 copies of both outputs and of their difference would be the largest allocation
    of a prune."""
    out = []
    for name, ref, new in zip(names, original, pruned):
        sums = AgreementSums()
        sums.update(ref, new, chunk)
        out.append(sums.result(name))
    return out


def drift(agreement: list[OutputAgreement]) -> float:
    """1 − (worst output's mean cosine): 0 for identical outputs; what ``--max-drift`` bounds."""
    return 1.0 - min(item.cosine_mean for item in agreement)


def measure_latency(original: ort.InferenceSession, pruned: ort.InferenceSession,
                    probe: Mapping[str, np.ndarray], batch: int = 32, repeats: int = 20,
                    before_run: Callable[[], None] | None = None) -> Latency:
    """Median latency of alternating single runs of both sessions, after one warm-up run each;
    ``before_run`` is called before every run (a cancel poll, outside the timed span)."""
    poll = before_run or (lambda: None)
    count = next(iter(probe.values())).shape[0]
    batch = max(1, min(batch, count))
    feed = {name: np.ascontiguousarray(array[:batch]) for name, array in probe.items()}
    # A pruned decoder takes fewer KV-cache inputs than the original: each session gets its own.
    feeds = [session_feed(session, feed) for session in (original, pruned)]
    times: dict[int, list[float]] = {0: [], 1: []}
    for session, own in zip((original, pruned), feeds):  # warm-up: first runs allocate and plan
        poll()
        session.run(None, own)
    for _ in range(repeats):
        for key, session in ((0, original), (1, pruned)):
            poll()
            begin = time.perf_counter()
            session.run(None, feeds[key])
            times[key].append(time.perf_counter() - begin)
    return Latency(original_ms=1e3 * float(np.median(times[0])), pruned_ms=1e3 * float(np.median(times[1])),
                   batch=batch, repeats=repeats)


#: Latency alternates single runs of the two models, both sessions alive (machine noise hits both
#: alike), only while the two models' weights together stay below this: above it, the second copy
#: of the weights would be a prune's largest allocation (a 2.5 GB decoder: 1.75x plain
#: onnxruntime's peak), so one session is alive at a time and *rounds* of runs alternate instead.
ALTERNATE_RUNS_BELOW = 256 * 2**20
#: Rounds per model when one session is alive at a time (each round makes its session again).
LATENCY_ROUNDS = 2


def alternates_runs(original: onnx.ModelProto, pruned: onnx.ModelProto) -> bool:
    """Whether latency may hold both models' sessions (:data:`ALTERNATE_RUNS_BELOW`)."""
    return session_weight_bytes(original) + session_weight_bytes(pruned) < ALTERNATE_RUNS_BELOW


def latency_in_rounds(make_original: Callable[[], ort.InferenceSession],
                      make_pruned: Callable[[], ort.InferenceSession], probe: Mapping[str, np.ndarray],
                      batch: int = 32, repeats: int = 20, rounds: int = LATENCY_ROUNDS,
                      before_run: Callable[[], None] | None = None) -> Latency:
    """Latency with one session alive at a time: ``rounds`` rounds, each making the original's
    session, one warm-up and ``repeats / rounds`` timed runs, dropping it, then the same for the
    pruned model; the median of each model's runs. ``before_run``: as in :func:`measure_latency`."""
    poll = before_run or (lambda: None)
    count = next(iter(probe.values())).shape[0]
    batch = max(1, min(batch, count))
    feed = {name: np.ascontiguousarray(array[:batch]) for name, array in probe.items()}
    times: dict[int, list[float]] = {0: [], 1: []}
    per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    for runs in per_round:
        for key, make in ((0, make_original), (1, make_pruned)):
            poll()  # before the session too: a large model's takes seconds to make
            session = make()
            own = session_feed(session, feed)
            poll()
            session.run(None, own)  # warm-up: first runs allocate and plan
            for _ in range(runs):
                poll()
                begin = time.perf_counter()
                session.run(None, own)
                times[key].append(time.perf_counter() - begin)
            del session
    return Latency(original_ms=1e3 * float(np.median(times[0])), pruned_ms=1e3 * float(np.median(times[1])),
                   batch=batch, repeats=repeats)


def agreement_dicts(items: list[OutputAgreement]) -> list[dict]:
    return [asdict(item) for item in items]
