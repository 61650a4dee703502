"""Layer-pruning policies × healing, side by side, on real models.

Run: python benchmarks/prune_compare.py [--subjects minilm,digits,lm] [--draws 10] [--pairs]
                                         [--calib-source readme|docstrings] [--no-latency]

Subjects: MiniLM-L6 (k = 1, 2, 3 of 6 encoder layers; mean embedding cosine to the original and
nearest-neighbour agreement@10 on evaluation sentences from other packages' READMEs than the
calibration sentences — READMEs of the alternate packages by default, docstrings of 7 packages
with ``--calib-source docstrings``) and a residual CNN trained here on scikit-learn's digits
(k up to half its blocks; test accuracy retained), and ``lm``: the tiny decoder LM trained by
examples/train_tiny_lm.py (k = 1, 2, 3 of 8 decoder layers; next-token top-1 agreement, KL and
perplexity ratio on held-out packages' text, benchmarks/prune_lm.py). For each policy × heal {none, linear,
attention} × k (``--heals``): quality, parameter ratio, latency ratio. ``--pairs`` also prints every subset for k ≤ 2, healed
sequentially (the default) and with independently fitted maps.

A policy is one class in redaudit.prune.policies; registering it here is one line in
:data:`POLICIES` (its name and number of draws). Healing goes through the library's
``LinearHealer``: the maps fitted on the original model are fitted once per span in one pass
and shared; a later span of a multi-span removal is fitted on the model with the earlier spans
healed (sequential healing), cached per upstream spans.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redaudit.prune import find_candidates, remove_blocks  # noqa: E402
from redaudit.prune.cost import parameter_count  # noqa: E402
from redaudit.prune.heal import HealOptions, LinearHealer  # noqa: E402
from redaudit.prune.heal_spans import Span, merge_spans  # noqa: E402
from redaudit.core.run import SessionFactory  # noqa: E402
from redaudit.prune.verify import measure_latency  # noqa: E402


def make_session(model, threads):
    return SessionFactory("cpu", threads).create(model)[0]


@dataclass
class Subject:
    """A model, its removable blocks, calibration feeds and evaluation feeds, and a quality
    function (original outputs, pruned outputs) -> {metric: value}."""

    name: str
    model: onnx.ModelProto
    calibration: list[dict[str, np.ndarray]]
    evaluation: list[dict[str, np.ndarray]]
    quality: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    ks: list[int]
    probe: dict[str, np.ndarray]  # whole calibration arrays, for policies that scan
    blocks: list = field(default_factory=list)
    healers: dict[str, LinearHealer] = field(default_factory=dict)
    cache: dict[tuple[tuple[int, ...], str], dict[str, float]] = field(default_factory=dict)
    contexts: dict[tuple, object] = field(default_factory=dict)
    reference: np.ndarray | None = None


# --- policies: choose(subject, seed, k) -> the k block indices to remove ----------------------
def library_policy(name: str) -> Callable[[Subject, int, int], list[int]]:
    """A policy of redaudit.prune.policies (cka, bi, angular, greedy, random), scored on the
    calibration arrays through the same PreparedModel/PolicyContext prune uses. Choices need not
    be nested (angular's best span of 3 need not contain its best span of 2), so each k asks."""
    def choose(subject: Subject, seed: int, k: int) -> list[int]:
        from redaudit.core.prepared import PreparedModel
        from redaudit.core.spec import ScanSpec
        from redaudit.prune.policies import PolicyContext, make_policy

        key = ("context",)
        if key not in subject.contexts:
            samples = len(next(iter(subject.probe.values())))
            spec = ScanSpec(samples=samples, cka_batch=min(256, samples // 2 * 2))
            subject.contexts[key] = PolicyContext(PreparedModel.load(subject.model), subject.blocks, spec,
                                                  subject.probe)
        return make_policy(name, seed).choose(subject.contexts[key], k)
    return choose


#: name -> (choose function, draws). Deterministic policies need one draw.
POLICIES: dict[str, tuple[Callable[[Subject, int, int], list[int]], int]] = {
    "cka": (library_policy("cka"), 1),
    "bi": (library_policy("bi"), 1),
    "angular": (library_policy("angular"), 1),
    "greedy": (library_policy("greedy"), 1),
    "random": (library_policy("random"), 10),
}


# --- measurement ------------------------------------------------------------------------------
#: onnxruntime threads per session. One: on a shared machine a spinning intra-op pool is many
#: times slower than one thread, and single-thread latency ratios are the stable ones.
THREADS = 1


def run_outputs(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    session = make_session(model, THREADS)
    return np.concatenate([session.run(None, feed)[0] for feed in feeds])


def fit_all_spans(subject: Subject) -> float:
    """Fit a map (on the original) for every contiguous run of blocks in one calibration pass;
    returns seconds. ``linear`` heals sequentially, ``linear-independent`` only with these maps;
    ``attention`` (``--heal attention``: maps that also mix tokens through the upstream attention)
    is fitted as it is applied, sequentially."""
    blocks = subject.blocks
    spans = [Span(blocks[i].entry, blocks[j].exit, ()) for i in range(len(blocks)) for j in range(i, len(blocks))
             if j - i < max(subject.ks)]
    sequential = LinearHealer(subject.model, subject.calibration, HealOptions(threads=THREADS))
    independent = LinearHealer(subject.model, subject.calibration, HealOptions(threads=THREADS, sequential=False))
    started = time.perf_counter()
    sequential.fit(spans)
    independent.maps = sequential.maps  # the maps fitted on the original are the same for both
    subject.healers = {"linear": sequential, "linear-independent": independent,
                       "attention": LinearHealer(subject.model, subject.calibration,
                                                 HealOptions(threads=THREADS, attention_mix=True))}
    return time.perf_counter() - started


def build(subject: Subject, combo: tuple[int, ...], heal: str) -> onnx.ModelProto:
    chosen = [subject.blocks[i] for i in combo]
    if heal == "none":
        return remove_blocks(subject.model, chosen)
    return subject.healers[heal].apply(chosen)[0]


def evaluate(subject: Subject, combo: tuple[int, ...], heal: str) -> dict[str, float]:
    key = (tuple(sorted(combo)), heal)
    if key not in subject.cache:
        model = build(subject, key[0], heal)
        metrics = subject.quality(subject.reference, run_outputs(model, subject.evaluation))
        metrics["params"] = parameter_count(model) / parameter_count(subject.model)
        subject.cache[key] = metrics
    return subject.cache[key]


def compare(subject: Subject, draws_override: int | None, heals: tuple[str, ...]) -> Iterator[dict]:
    """Rows policy × k × heal, yielded as they are measured."""
    for policy, (choose, draws) in POLICIES.items():
        draws = draws_override if draws > 1 and draws_override else draws
        for k in subject.ks:
            choices = [choose(subject, seed, k) for seed in range(draws)]
            for heal in heals:
                measured = [evaluate(subject, tuple(c), heal) for c in choices]
                row = {"subject": subject.name, "policy": policy, "k": k, "heal": heal, "draws": draws,
                       "removed": sorted(choices[0]) if draws == 1 else None}
                row.update({name: float(np.mean([m[name] for m in measured])) for name in measured[0]})
                yield row


def latency_ratio(subject: Subject, combo: tuple[int, ...], heal: str) -> float:
    feed = subject.evaluation[0]
    return measure_latency(make_session(subject.model, THREADS), make_session(build(subject, combo, heal), THREADS), feed,
                           batch=32, repeats=10).ratio


# --- subjects ---------------------------------------------------------------------------------
def embedding_quality(reference: np.ndarray, pruned: np.ndarray, neighbours: int = 10) -> dict[str, float]:
    """Mean cosine per sentence, and the mean overlap of each sentence's 10 nearest neighbours."""
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    b = pruned / np.linalg.norm(pruned, axis=1, keepdims=True)
    cosine = float(np.mean(np.sum(a * b, axis=1)))

    def knn(unit: np.ndarray) -> np.ndarray:
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1)[:, :neighbours]

    ours, theirs = knn(a), knn(b)
    overlap = np.mean([len(set(x) & set(y)) / neighbours for x, y in zip(ours, theirs)])
    return {"cosine": cosine, "nn@10": float(overlap)}


def minilm_subject(folder: Path, calibration: int, evaluation: int, source: str, batch: int = 32) -> Subject:
    from examples.minilm_export import export_minilm, model_dir
    from benchmarks.sentence_sets import disjoint_sets
    from transformers import AutoTokenizer

    calib, held_out = disjoint_sets(calibration, evaluation, source=source)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))

    def feeds(sentences: list[str]) -> list[dict[str, np.ndarray]]:
        out = []
        for start in range(0, len(sentences), batch):
            encoded = tokenizer(sentences[start:start + batch], padding="longest", truncation=True,
                                max_length=64, return_tensors="np")
            out.append({"input_ids": encoded["input_ids"].astype(np.int64),
                        "attention_mask": encoded["attention_mask"].astype(np.int64)})
        return out

    encoded = tokenizer(calib, padding="max_length", truncation=True, max_length=64, return_tensors="np")
    probe = {"input_ids": encoded["input_ids"].astype(np.int64),
             "attention_mask": encoded["attention_mask"].astype(np.int64)}
    model = onnx.load(str(export_minilm(folder / "minilm.onnx")))
    return Subject("MiniLM-L6", model, feeds(calib), feeds(held_out), embedding_quality, [1, 2, 3], probe)


def digits_subject(folder: Path, blocks: int = 8) -> Subject:
    from benchmarks.digits_cnn import digits_splits, train_digits_cnn

    splits = digits_splits()
    train_digits_cnn(folder / "digits.onnx", splits, blocks=blocks)
    labels = splits.test_y

    def quality(reference: np.ndarray, pruned: np.ndarray) -> dict[str, float]:
        original = float(np.mean(reference.argmax(1) == labels))
        return {"accuracy": float(np.mean(pruned.argmax(1) == labels)),
                "retained": float(np.mean(pruned.argmax(1) == labels)) / original,
                "top1 agree": float(np.mean(pruned.argmax(1) == reference.argmax(1)))}

    calibration = [{"image": splits.calib_x[s:s + 64]} for s in range(0, len(splits.calib_x), 64)]
    return Subject(f"digits CNN ({blocks} blocks)", onnx.load(str(folder / "digits.onnx")), calibration,
                   [{"image": splits.test_x}], quality, list(range(1, blocks // 2 + 1)),
                   {"image": splits.calib_x})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", default="digits,minilm")
    parser.add_argument("--draws", type=int, default=None, help="draws for randomised policies (default 10)")
    parser.add_argument("--calibration", type=int, default=512, help="MiniLM calibration sentences (at most)")
    parser.add_argument("--evaluation", type=int, default=400, help="MiniLM evaluation sentences (at most)")
    parser.add_argument("--calib-source", choices=("readme", "docstrings"), default="readme",
                        help="MiniLM calibration text: READMEs of other packages, or docstrings (a domain shift)")
    parser.add_argument("--pairs", action="store_true", help="also every subset of k ≤ 2 blocks")
    parser.add_argument("--no-policies", action="store_true", help="skip the policy table (with --pairs)")
    parser.add_argument("--no-latency", action="store_true", help="leave the latency column empty")
    parser.add_argument("--lm-windows", type=int, default=None,
                        help="tiny LM: only the first N token windows of calibration and evaluation (default all 64)")
    parser.add_argument("--lm-dir", type=Path, default=None,
                        help="folder of a trained tiny LM (default: .bench-cache/tiny-lm, trained if missing)")
    parser.add_argument("--heals", default="none,linear,attention",
                        help="healing methods compared (attention: tokens mixed through the upstream attention)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        for name in args.subjects.split(","):
            started = time.perf_counter()
            if name == "lm":
                from benchmarks.prune_lm import lm_subject

                subject = lm_subject(Subject, args.lm_dir, args.lm_windows)
            else:
                subject = (minilm_subject(folder, args.calibration, args.evaluation, args.calib_source)
                           if name == "minilm"
                           else digits_subject(folder))
                subject.blocks = find_candidates(subject.model)
            subject.reference = run_outputs(subject.model, subject.evaluation)
            if name == "lm":
                from benchmarks.prune_lm import original_perplexity

                print(f"\noriginal tiny LM: perplexity {original_perplexity(args.lm_dir, subject.reference):.2f} "
                      "on the evaluation windows", flush=True)
            fit_seconds = fit_all_spans(subject)
            print(f"\n## {subject.name}: {len(subject.blocks)} blocks; load average "
                  f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}; calibration "
                  f"{sum(len(next(iter(f.values()))) for f in subject.calibration)} samples, evaluation "
                  f"{len(subject.reference)}; all span maps fitted in {fit_seconds:.1f} s", flush=True)
            header = False
            heals = tuple(args.heals.split(","))
            for row in ([] if args.no_policies else compare(subject, args.draws, heals)):
                metrics = [key for key in row if key not in ("subject", "policy", "k", "heal", "draws", "removed")]
                if not header:
                    print("| policy | k | heal | removed | " + " | ".join(metrics) + " | latency |")
                    print("| --- " * (5 + len(metrics)) + "|")
                    header = True
                latency = (f"{latency_ratio(subject, tuple(row['removed']), row['heal']):.2f}"
                           if row["removed"] is not None and not args.no_latency else "")
                removed = ",".join(map(str, row["removed"])) if row["removed"] is not None else f"mean of {row['draws']}"
                print(f"| {row['policy']} | {row['k']} | {row['heal']} | {removed} | "
                      + " | ".join(f"{row[m]:.4f}" for m in metrics) + f" | {latency} |", flush=True)
            if args.pairs:
                metrics = [m for m in evaluate(subject, (0,), "none") if m != "params"]
                healed_with = [heal for heal in heals if heal != "none"]
                print(f"\nevery subset, k ≤ 2 ({subject.name}): " + ", ".join(metrics[:2]) + " none → "
                      + " / ".join(healed_with))
                for k in (1, 2):
                    for combo in itertools.combinations(range(len(subject.blocks)), k):
                        plain = evaluate(subject, combo, "none")
                        healed = [evaluate(subject, combo, heal) for heal in healed_with]
                        line = f"  {combo}: " + "  ".join(
                            f"{m} {plain[m]:.4f} → " + " / ".join(f"{h[m]:.4f}" for h in healed) for m in metrics[:2])
                        if len(merge_spans([subject.blocks[i] for i in combo])) > 1:
                            alone = evaluate(subject, combo, "linear-independent")
                            line += "  (independent maps: " + "  ".join(f"{m} {alone[m]:.4f}" for m in metrics[:2]) + ")"
                        print(line, flush=True)
            print(f"({subject.name} took {time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
