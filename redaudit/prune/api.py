"""``prune_model``: candidates → similarity → selection → surgery → verification → file (+ history).

The stages live in their own modules; this one only sequences them and keeps the rules that
span stages: a model that fails the checker or does not run is never written, and a request
that would remove every removable block is refused.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from redaudit.errors import RedauditError
from redaudit.prune import select
from redaudit.prune.candidates import Block, find_candidates
from redaudit.prune.cost import block_costs, parameter_count
from redaudit.prune.graph import GraphIndex
from redaudit.prune.result import Candidate, PruneResult
from redaudit.prune.similarity import ProbeOptions, block_similarity
from redaudit.prune.surgery import PruneError, remove_blocks
from redaudit.prune.verify import compare_outputs, drift, make_session, measure_latency, run_all

#: Above this a model is saved with its tensors in one external ``.data`` file (protobuf limit).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def _load(model: str | os.PathLike[str] | onnx.ModelProto, max_bytes: int | None) -> tuple[onnx.ModelProto, str, str, int]:
    if isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
        return model, "<in-memory>", hashlib.sha256(data).hexdigest(), len(data)
    from redaudit.core.model import DEFAULT_MAX_MODEL_BYTES, load_model

    loaded = load_model(model, max_bytes=max_bytes or DEFAULT_MAX_MODEL_BYTES)
    return loaded.proto, loaded.path, loaded.sha256, loaded.size_bytes


def probe_arrays(model: onnx.ModelProto, options: ProbeOptions) -> tuple[dict[str, np.ndarray], bool, list[str]]:
    """The probe samples scan would use, as whole arrays (for output comparison and timing)."""
    from redaudit.core.probe import input_specs, make_probe

    probe = make_probe(input_specs(model), options.get("inputs"), options.get("samples", 2560),
                       options.get("seed", 0), options.get("dims"), options.get("int_range"))
    cka_batch = options.get("cka_batch", 256)
    parts = list(probe.batches(cka_batch or probe.samples, probe.samples))
    arrays = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return arrays, probe.real, list(probe.warnings)


def describe_candidates(model: onnx.ModelProto, blocks: Sequence[Block], scores: np.ndarray,
                        input_shapes: Mapping[str, Sequence[int]]) -> list[Candidate]:
    costs, total_params, total_flops = block_costs(model, GraphIndex.build(model), blocks, input_shapes)
    return [Candidate(index=i, name=block.name, entry=block.entry, kind=block.kind, nodes=len(block.nodes),
                      similarity=float(scores[i]), params=params, flops=flops,
                      param_share=params / total_params if total_params else 0.0,
                      flop_share=flops / total_flops if total_flops else 0.0)
            for i, (block, (params, flops)) in enumerate(zip(blocks, costs))]


class _Evaluator:
    """Runs candidate pruned models against the original's outputs on the probe arrays."""

    def __init__(self, original: onnx.ModelProto, arrays: Mapping[str, np.ndarray], chunk: int) -> None:
        self.arrays, self.chunk = arrays, chunk
        self.names = [output.name for output in original.graph.output]
        self.session = make_session(original)
        self.reference = run_all(self.session, arrays, chunk)

    def agreement(self, pruned: onnx.ModelProto):
        session = make_session(pruned)
        return compare_outputs(self.names, self.reference, run_all(session, self.arrays, self.chunk)), session


def _plan(blocks: list[Block], scores: np.ndarray, *, remove: int | None, target_params: float | None,
          max_drift: float | None, names: Sequence[str] | None, model: onnx.ModelProto) -> list[int]:
    if names:
        chosen = select.resolve_names(blocks, names)
        select.check_not_everything(len(chosen), len(blocks))
        return chosen
    order = select.removal_order(scores)
    if remove is not None:
        return select.first_n(order, remove)
    if target_params is not None:
        costs, total, _ = block_costs(model, GraphIndex.build(model), blocks)
        return select.until_params(order, [params for params, _ in costs], total, target_params)
    if max_drift is not None:
        return order[:-1]
    raise PruneError("say what to remove: --remove N, --target-params PCT, --max-drift X or --blocks NAMES "
                     "(or --list to see the candidates)")


def _limit_by_drift(model: onnx.ModelProto, blocks: list[Block], plan: list[int], bound: float,
                    evaluator: _Evaluator) -> list[int]:
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


def _iterate(model: onnx.ModelProto, first_blocks: list[Block], first_scores: np.ndarray, *, remove: int | None,
             target_params: float | None, max_drift: float | None, options: ProbeOptions,
             evaluator: _Evaluator) -> tuple[onnx.ModelProto, list[str], list[dict[str, Any]]]:
    """Remove one block at a time, re-finding candidates and re-scanning after each removal."""
    if remove is not None:
        select.check_not_everything(remove, len(first_blocks))
    elif target_params is None and max_drift is None:
        raise PruneError("--iterative needs --remove N, --target-params PCT or --max-drift X")
    total = parameter_count(model)
    current, blocks, scores = model, first_blocks, first_scores
    removed: list[str] = []
    steps: list[dict[str, Any]] = []
    while True:
        if remove is not None and len(removed) >= remove:
            break
        if target_params is not None and parameter_count(current) <= total * target_params / 100.0:
            break
        if len(blocks) <= 1:
            if max_drift is not None and remove is None and target_params is None:
                break
            raise PruneError("cannot go on without removing every removable block; ask for fewer removals")
        best = select.removal_order(scores)[0]
        candidate = remove_blocks(current, [blocks[best]])
        if max_drift is not None:
            agreement, _ = evaluator.agreement(candidate)
            if drift(agreement) > max_drift:
                if not removed:
                    raise PruneError(f"removing even the most redundant block ({blocks[best].name}) drifts the "
                                     f"outputs beyond --max-drift {max_drift:g}; nothing written")
                break
        steps.append({"block": blocks[best].name, "similarity": float(scores[best]), "candidates": len(blocks)})
        removed.append(blocks[best].name)
        current = candidate
        blocks = find_candidates(current)
        if blocks:
            scores, _ = block_similarity(current, blocks, options)
    return current, removed, steps


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> int:
    """Write atomically (temp file, then rename); big models get one external data file next to
    it. Returns the bytes written (model file plus its data file)."""
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    data_name = target.name + ".data"
    if model.ByteSize() > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(temporary), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name)
    else:
        onnx.save_model(model, str(temporary))
    os.replace(temporary, target)
    data_file = target.with_name(data_name)
    return target.stat().st_size + (data_file.stat().st_size if data_file.exists()
                                    and model.ByteSize() > EXTERNAL_DATA_THRESHOLD else 0)


def _scan_msrs(model: Any, options: ProbeOptions, warnings: list[str], which: str):
    from redaudit import scan

    try:
        return scan(model, **options.scan_kwargs())
    except RedauditError as error:
        warnings.append(f"MSRS {which} pruning not measured: {error}")
        return None


def _record(db: Any, name: str, label: str | None, before, after, parent_sha256: str) -> int:
    """Store the pruned model's scan as a version whose parent is the original (recorded first
    if the history does not know it yet)."""
    try:
        from redaudit.history import record_scan
        from redaudit.history.errors import UnknownReferenceError
    except ImportError as error:
        raise PruneError(f"--record needs the history module, which is not available here ({error})") from None
    if before is None or after is None:
        raise PruneError("--record needs MSRS scans of both models, which could not be made (see warnings)")
    try:
        return record_scan(db, after, name, label=label, parent_sha256=parent_sha256)
    except UnknownReferenceError:
        record_scan(db, before, name)
        return record_scan(db, after, name, label=label, parent_sha256=parent_sha256)


def prune_model(model: str | os.PathLike[str] | onnx.ModelProto, *, remove: int | None = None,
                target_params: float | None = None, max_drift: float | None = None,
                blocks: Sequence[str] | None = None, iterative: bool = False, list_only: bool = False,
                output: str | os.PathLike[str] | None = None, latency: bool = True, latency_batch: int = 32,
                latency_repeats: int = 20, measure_msrs: bool = True, record: str | None = None,
                label: str | None = None, db: Any = None, **scan_options: Any) -> PruneResult:
    """Find removable blocks, remove the most redundant ones, verify, optionally save and record.

    Selection (one of): ``blocks`` by name; ``remove`` N most similar; ``target_params`` = keep at
    most this percentage of the parameters; ``max_drift`` = stop before 1 − output cosine exceeds
    it (combinable with the others as a cap). ``iterative`` re-scans after each removal.
    ``scan_options`` are ``redaudit.scan``'s keyword arguments (inputs, samples, seed, dims,
    int_range, cka_batch, epsilon, ...): the probe and the similarity follow them exactly.
    """
    if iterative and blocks:
        raise PruneError("--iterative chooses blocks by similarity; it does not combine with --blocks")
    if remove is not None and remove < 1:
        raise PruneError("--remove must be at least 1")
    if max_drift is not None and not 0 <= max_drift <= 2:
        raise PruneError(f"--max-drift is 1 - cosine similarity, between 0 and 2; got {max_drift:g}")
    proto, source, sha256, size = _load(model, scan_options.get("max_model_bytes"))
    options = ProbeOptions(dict(scan_options))
    candidates = find_candidates(proto)
    if not candidates:
        raise PruneError(f"no removable block in {source}: no residual block, transformer layer or "
                         "shape-preserving chain of layers was found")
    arrays, real, warnings = probe_arrays(proto, options)
    if not real:
        warnings.append("probe inputs are synthetic (random); pass real data with --inputs for meaningful numbers")
    scores, _ = block_similarity(proto, candidates, options)
    shapes = {name: array.shape for name, array in arrays.items()}
    result = PruneResult(source=source, source_sha256=sha256, iterative=iterative,
                         candidates=describe_candidates(proto, candidates, scores, shapes),
                         probe_real=real, samples=int(next(iter(arrays.values())).shape[0]), warnings=warnings)
    if list_only:
        return result
    chunk = scan_options.get("cka_batch", 256) or 256
    evaluator = _Evaluator(proto, arrays, chunk)
    if iterative:
        pruned, result.removed, result.steps = _iterate(
            proto, candidates, scores, remove=remove, target_params=target_params, max_drift=max_drift,
            options=options, evaluator=evaluator)
    else:
        plan = _plan(candidates, scores, remove=remove, target_params=target_params, max_drift=max_drift,
                     names=blocks, model=proto)
        if max_drift is not None and not blocks:
            plan = _limit_by_drift(proto, candidates, plan, max_drift, evaluator)
        pruned = remove_blocks(proto, [candidates[i] for i in plan])
        result.removed = [candidates[i].name for i in plan]
    result.agreement, pruned_session = evaluator.agreement(pruned)  # raises if it does not run
    result.drift = drift(result.agreement)
    result.model = pruned
    result.params_before, result.params_after = parameter_count(proto), parameter_count(pruned)
    result.size_before = size
    if latency:
        result.latency = measure_latency(evaluator.session, pruned_session, arrays, latency_batch, latency_repeats)
    if output is not None:
        result.size_after = save_model(pruned, output)
        result.output_path = str(output)
    else:
        result.size_after = pruned.ByteSize()
    if measure_msrs or record:
        before = _scan_msrs(model if not isinstance(model, onnx.ModelProto) else proto, options, result.warnings, "before")
        after = _scan_msrs(output if output is not None else pruned, options, result.warnings, "after")
        result.msrs_before = before.msrs if before is not None else float("nan")
        result.msrs_after = after.msrs if after is not None else float("nan")
        if record:
            result.recorded_scan_id = _record(db, record, label, before, after, sha256)
    return result
