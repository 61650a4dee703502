"""``prune_model``: candidates → similarity → selection → surgery → verification → file (+ history).

The stages live in their own modules; this one only sequences them and keeps the rules that
span stages: a model that fails the checker or does not run is never written, and a request
that would remove every removable block is refused.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

import redaudit
from redaudit.core.backend import select_backend
from redaudit.core.cancel import CancelCheck, check_cancel
from redaudit.core.engine import check_batching, scan_prepared
from redaudit.core.fused import is_fused_skip_norm
from redaudit.core.graph import parameter_count
from redaudit.core.prepared import PreparedModel
from redaudit.core.probe import make_probe
from redaudit.core.progress import ProgressCallback, ScanProgress, notify
from redaudit.core.spec import MAX_INT32, ScanSpec
from redaudit.core.weights import stored_bytes
from redaudit.errors import RedauditError, ScanCancelled
from redaudit.prune import planning
from redaudit.prune.candidates import (
    Block,
    find_candidates,
    fused_prenorm_layers,
    granularity_of,
)
from redaudit.prune.cost import block_costs
from redaudit.prune.gates import Gates, check_agreement
from redaudit.prune.lm_metrics import looks_like_causal_lm
from redaudit.prune.output import refuse_overwriting_input, save_model
from redaudit.prune.policies import PolicyContext, PrunePolicy, make_policy
from redaudit.prune.record import record_prune, verification_columns
from redaudit.prune.result import Candidate, PruneResult
from redaudit.prune.errors import PruneError
from redaudit.prune.surgery import remove_blocks
from redaudit.prune.verify import Evaluator, alternates_runs, drift


def probe_arrays(prepared: PreparedModel, spec: ScanSpec,
                 inputs: Mapping[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], bool, list[str]]:
    """The probe samples scan would use, built once as whole arrays: every measurement of a
    prune run (similarity, verification, latency, MSRS before/after) reads these."""
    probe = make_probe(prepared.input_specs, prepared.probe_source(spec, inputs), spec.samples,
                       spec.seed, spec.dims_dict, spec.int_range)
    parts = list(probe.batches(spec.cka_batch or probe.samples, probe.samples))
    arrays = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return arrays, probe.real, [*prepared.notes, *probe.warnings]


def describe_candidates(prepared: PreparedModel, blocks: Sequence[Block], scores: np.ndarray,
                        input_shapes: Mapping[str, Sequence[int]]) -> list[Candidate]:
    costs, total_params, total_flops = block_costs(prepared.proto, prepared.index, blocks, input_shapes)
    return [Candidate(index=i, name=block.name, entry=block.entry, kind=block.kind, nodes=len(block.nodes),
                      similarity=float(scores[i]), params=params, flops=flops,
                      param_share=params / total_params if total_params else 0.0,
                      flop_share=flops / total_flops if total_flops else 0.0)
            for i, (block, (params, flops)) in enumerate(zip(blocks, costs))]


def _calibration(prepared: PreparedModel, spec: ScanSpec, calibrate: Any, arrays: Mapping[str, np.ndarray],
                 result: PruneResult) -> Mapping[str, np.ndarray]:
    """The samples healing maps are fitted on: ``calibrate`` (an .npz path or arrays), else the
    probe samples — then the verification runs on the samples the maps were fitted on, and the
    result says so."""
    if calibrate is None:
        result.warnings.append("healing was calibrated on the probe inputs that also verify the pruned model; "
                               "pass --calibrate data.npz to keep calibration and evaluation apart")
        return arrays
    if isinstance(calibrate, (str, os.PathLike)):  # every sample of the file, read safely
        calibrate = probe_arrays(prepared, spec.with_options(inputs=os.fspath(calibrate), text=None, tokenizer=None,
                                                             samples=MAX_INT32))[0]
    samples = min((len(array) for array in calibrate.values()), default=0)
    if samples < FEW_CALIBRATION_SAMPLES:
        result.warnings.append(f"healing is fitted on only {samples} calibration sample(s): a map fitted on fewer "
                               f"samples than features is underdetermined and may heal into a larger, worse model; "
                               f"calibrate on {FEW_CALIBRATION_SAMPLES} samples or more")
    return calibrate


#: Below this many calibration samples the healing fit is warned about (issue 22: a 1-sample
#: set healed into a larger, worse model without a word).
FEW_CALIBRATION_SAMPLES = 64


def _healed(prepared: PreparedModel, spec: ScanSpec, chosen: list[Block], heal: str, calibrate: Any,
            arrays: Mapping[str, np.ndarray], result: PruneResult, cancel: CancelCheck | None) -> onnx.ModelProto:
    """Remove ``chosen`` and fit a linear map (``heal="attention"``: one that also mixes tokens
    through the upstream attention) in place of each span (sequentially: a later span's map on
    the model with the earlier ones healed) on calibration activations."""
    from redaudit.prune.heal import heal_blocks

    calibration = _calibration(prepared, spec, calibrate, arrays, result)
    pruned, spans = heal_blocks(prepared.proto, chosen, calibration, heal=heal,
                                max_memory_bytes=spec.max_memory_bytes, folder=prepared.sessions.folder,
                                cancel=cancel)
    result.healed = [span.to_dict() for span in spans]
    return pruned


def _scan_msrs(prepared: PreparedModel, spec: ScanSpec, arrays: Mapping[str, np.ndarray],
               warnings: list[str], which: str, progress: ProgressCallback | None = None,
               cancel: CancelCheck | None = None):
    """The MSRS scan of one model, or None and a warning when it cannot be made; a cancel is
    no such reason (it stops the prune)."""
    stage = f"msrs {which}"
    notify(progress, stage)
    nested = None if progress is None else (
        lambda event: progress(ScanProgress(f"{stage}/{event.stage}", event.done, event.total)))
    try:
        return scan_prepared(prepared, spec, inputs=arrays, progress=nested, cancel=cancel)
    except ScanCancelled:
        raise
    except RedauditError as error:
        warnings.append(f"MSRS {which} pruning not measured: {error}")
        return None


def prune_model(model: str | os.PathLike[str] | onnx.ModelProto | PreparedModel, *, remove: int | None = None,
                target_params: float | None = None, max_drift: float | None = None,
                blocks: Sequence[str] | None = None, iterative: bool = False, list_only: bool = False,
                output: str | os.PathLike[str] | None = None, latency: bool = True, latency_batch: int = 32,
                latency_repeats: int = 20, measure_msrs: bool = True, record: str | None = None,
                label: str | None = None, db: Any = None, policy: str | PrunePolicy = "bi",
                heal: str = "none", calibrate: Any = None, min_cosine: float | None = 0.9,
                min_top1: float | None = None, max_kl: float | None = None,
                max_ppl_increase: float | None = None, force: bool = False,
                spec: ScanSpec | None = None, inputs: Any = None, progress: ProgressCallback | None = None,
                cancel: CancelCheck | None = None, **spec_options: Any) -> PruneResult:
    """Find removable blocks, remove the most redundant ones, verify, optionally save and record.

    Selection (one of): ``blocks`` by name; ``remove`` N; ``target_params`` = keep at most this
    percentage of the parameters; ``max_drift`` = stop before 1 − output cosine exceeds it
    (combinable with the others as a cap). ``policy`` ranks the blocks (default ``bi``, Block
    Influence, which the policy comparison in docs/prune.md supports; ``cka`` is the paper's rule). ``iterative`` re-scores after each removal. ``spec`` (or keyword options naming its
    fields) shapes the probe and the similarity exactly as it shapes a scan. ``progress``
    receives a ScanProgress per stage (load, candidates, probe arrays, similarity scan, surgery,
    verification, latency, msrs before/after with the scans' own stages after a "/", save).
    Gates (:class:`Gates`): ``min_cosine``, ``min_top1``, and for a causal LM ``max_kl`` and
    ``max_ppl_increase`` (percent) on its next-token predictions.

    ``cancel`` (a service job's ``cancelled()``) is polled before every onnxruntime run of every
    pass — scoring, healing calibration, verification, latency, MSRS before/after — and between
    stages; when it says stop, :class:`~redaudit.errors.ScanCancelled` is raised and nothing is
    written (the last poll comes before the save, and a save writes whole files or none).
    """
    if iterative and blocks:
        raise PruneError("--iterative chooses blocks by similarity; it does not combine with --blocks")
    from redaudit.prune.heal import HEAL_METHODS

    if heal not in HEAL_METHODS:
        raise PruneError(f"--heal must be one of {', '.join(HEAL_METHODS)}; got {heal!r}")
    if remove is not None and remove < 1:
        raise PruneError("--remove must be at least 1")
    if max_drift is not None and not 0 <= max_drift <= 2:
        raise PruneError(f"--max-drift is 1 - cosine similarity, between 0 and 2; got {max_drift:g}")
    for option, value, low, high in (("--min-cosine", min_cosine, -1.0, 1.0), ("--min-top1", min_top1, 0.0, 1.0),
                                     ("--target-params", target_params, 0.0, 100.0)):
        if value is not None and not low <= value <= high:  # also false for nan: a gate nan would be off
            raise PruneError(f"{option} must be a number in [{low:g}, {high:g}], got {value}")
    if calibrate is not None and heal == "none":
        raise PruneError("--calibrate is the set --heal fits on; add --heal linear|attention or drop --calibrate")
    if record is not None and not record.strip():
        raise PruneError("--record needs a model name")
    gates = Gates(min_cosine, min_top1, max_kl, max_ppl_increase)
    gates.check_request()
    spec, arrays_in = redaudit.spec_from_options(spec, inputs, **spec_options)
    chosen_policy = make_policy(policy, spec.seed) if isinstance(policy, str) else policy
    notify(progress, "load")
    prepared = PreparedModel.load(model, max_model_bytes=spec.max_model_bytes, device=spec.device)
    refuse_overwriting_input(prepared.path, None if list_only else output, (spec.inputs, inputs, calibrate))
    if not prepared.input_specs:
        raise PruneError(f"{prepared.path} has no graph inputs, so there is nothing to probe and no block "
                         "can be measured; export the model with its inputs")
    notify(progress, "candidates")
    fused = fused_prenorm_layers(prepared.index)
    if fused:
        ops = "/".join(sorted({node.op_type for node in prepared.index.nodes if is_fused_skip_norm(node)}))
        raise PruneError(f"cannot prune {prepared.path}: onnxruntime's optimizer fused each layer's residual sum "
                         f"with the next layer's norm ({ops}, {len(fused)} pre-norm layers), so no "
                         "layer can be bypassed; prune the model exported before optimization, then optimize the result")
    candidates = find_candidates(prepared.proto, prepared.index, granularity_of(spec.level))
    if not candidates:
        raise PruneError(f"no removable block in {prepared.path}: no residual block, transformer layer or "
                         "shape-preserving chain of layers was found")
    if spec.taps:  # --tap shapes MSRS before/after: an unknown tensor fails now, not as a late warning
        prepared.taps(spec.level, spec.taps)
    if not list_only:  # a request that cannot be carried out fails now, not after the similarity scan
        planning.check_request(candidates, remove=remove, target_params=target_params, max_drift=max_drift,
                               names=blocks)
    notify(progress, "probe arrays")
    arrays, real, warnings = probe_arrays(prepared, spec, arrays_in)
    samples = int(next(iter(arrays.values())).shape[0])
    if measure_msrs or record:  # the scans before/after: options they cannot run with fail now
        select_backend(spec.backend)
        check_batching(spec, samples)
    gates.check_model(looks_like_causal_lm(prepared.proto), real)  # before any model run
    if not real:
        warnings.append("probe inputs are synthetic (random); pass real data with --inputs for meaningful numbers")
    context = PolicyContext(prepared, candidates, spec, arrays, cancel)
    notify(progress, "similarity scan")
    check_cancel(cancel, "prune")
    scores = chosen_policy.scores(context)
    prepared.forget_sessions()  # the scoring scan's session holds a copy of the weights
    shapes = {name: array.shape for name, array in arrays.items()}
    result = PruneResult(source=prepared.path, source_sha256=prepared.sha256, iterative=iterative,
                         candidates=describe_candidates(prepared, candidates, scores, shapes),
                         probe_real=real, samples=samples, warnings=warnings,
                         policy=chosen_policy.name, policy_description=chosen_policy.description)
    if list_only:
        return result
    evaluator = Evaluator(prepared, arrays, spec.cka_batch or 256, real_ids=real,
                          max_memory_bytes=spec.max_memory_bytes, cancel=cancel)
    if evaluator.lm_output is not None and not real:
        result.warnings.append("token ids are synthetic: next-token agreement and KL compare the two models on "
                               "noise, and perplexity is not reported; pass real text for meaningful numbers")
    notify(progress, "surgery")
    check_cancel(cancel, "prune")
    if iterative:
        calibration = None if heal == "none" else _calibration(prepared, spec, calibrate, arrays, result)
        pruned, result.removed, result.steps, healed = planning.iterate(
            context, chosen_policy, remove=remove, target_params=target_params, max_drift=max_drift,
            evaluator=evaluator, calibration=calibration, attention_mix=heal == "attention")
        if healed:
            result.healed = healed
    else:
        plan = planning.plan(context, chosen_policy, remove=remove, target_params=target_params,
                             max_drift=max_drift, names=blocks)
        if max_drift is not None and not blocks:
            plan = planning.limit_by_drift(prepared.proto, candidates, plan, max_drift, evaluator)
        chosen = [candidates[i] for i in plan]
        pruned = remove_blocks(prepared.proto, chosen) if heal == "none" else \
            _healed(prepared, spec, chosen, heal, calibrate, arrays, result, cancel)
        result.removed = [candidates[i].name for i in plan]
    notify(progress, "verification")
    check_cancel(cancel, "prune")
    result.agreement, result.next_token, pruned_session = evaluator.verify(pruned)  # raises if it does not run
    result.drift = drift(result.agreement)
    check_agreement(result, gates, force, writes=output is not None or bool(record))
    result.model = pruned
    result.params_before, result.params_after = parameter_count(prepared.proto), parameter_count(pruned)
    result.size_before = prepared.size_bytes
    if latency:
        notify(progress, "latency")
        check_cancel(cancel, "prune")
        if not alternates_runs(prepared.proto, pruned):
            pruned_session = None  # one session alive at a time (verify.ALTERNATE_RUNS_BELOW)
        result.latency = evaluator.latency(pruned, pruned_session, latency_batch, latency_repeats)
    del pruned_session  # one model's weights at a time from here: each session holds a copy
    before = after = None
    if measure_msrs or record:
        pruned_prepared = prepared.derived(pruned)
        before = _scan_msrs(prepared, spec, arrays, result.warnings, "before", progress, cancel)
        prepared.forget_sessions()
        after = _scan_msrs(pruned_prepared, spec, arrays, result.warnings, "after", progress, cancel)
        result.msrs_before = before.msrs if before is not None else float("nan")
        result.msrs_after = after.msrs if after is not None else float("nan")
    if output is not None:
        notify(progress, "save")
    check_cancel(cancel, "prune")  # the last poll: from here the prune writes its file and record, and ends
    if output is not None:
        result.size_after = save_model(pruned, output, prepared.sessions.folder)
        result.output_path = str(output)
        if after is not None:
            after = dataclasses.replace(after, model=dataclasses.replace(after.model, path=str(output)))
    else:
        result.size_after = stored_bytes(pruned)
    if record:
        result.recorded_scan_id = record_prune(db, record, label, before, after, prepared.sha256,
                                               verification_columns(result, heal))
    return result
