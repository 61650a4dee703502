"""Orchestrates a scan: load → tap → augment → run batches → similarity → MSRS → ScanResult.

onnxruntime runs batch k+1 in a worker thread while the CKA math of batch k runs here: both
release the GIL, so the similarity cost hides behind inference.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import onnx

from redaudit import __version__
from redaudit.core.augment import REDUCTIONS, augment
from redaudit.core.backend import select_backend
from redaudit.core.cka import ESTIMATORS
from redaudit.errors import ConfigError
from redaudit.core.graph import GraphIndex
from redaudit.core.model import DEFAULT_MAX_MODEL_BYTES, check_model, load_model, model_sha256_of_proto
from redaudit.core.probe import input_specs, make_probe
from redaudit.core.result import LayerInfo, ModelInfo, ScanConfig, ScanResult
from redaudit.core.run import BatchRunner, create_session
from redaudit.core.similarity import AGGREGATES, SimilarityAccumulator
from redaudit.core.tap import select_taps

ProgressCallback = Callable[[int, int], None]
_RUN_CHUNK = 256  # samples per onnxruntime call when one CKA batch holds every sample


def _validate(config: ScanConfig) -> None:
    if config.reduce not in REDUCTIONS:
        raise ConfigError(f"unknown --reduce {config.reduce!r}; choose one of {', '.join(REDUCTIONS)}")
    if config.estimator not in ESTIMATORS:
        raise ConfigError(f"unknown --estimator {config.estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if config.aggregate not in AGGREGATES:
        raise ConfigError(f"unknown --aggregate {config.aggregate!r}; choose one of {', '.join(AGGREGATES)}")
    minimum = 4 if config.estimator == "unbiased" else 2
    if config.cka_batch is not None and config.cka_batch < minimum:
        raise ConfigError(f"--cka-batch must be at least {minimum} for the {config.estimator} estimator")
    if not config.beta > 0:
        raise ConfigError("--beta must be positive")
    if not -1.0 <= config.epsilon <= 1.0:
        raise ConfigError("--epsilon must lie in [-1, 1] (it is a CKA threshold)")


def parameter_count(model: onnx.ModelProto) -> int:
    """Number of float weights (integer initializers are shapes and indices, not parameters)."""
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                   onnx.TensorProto.BFLOAT16}
    return int(sum(int(np.prod(init.dims)) for init in model.graph.initializer if init.data_type in float_types))


def _model_info(proto: onnx.ModelProto, path: str, sha256: str, size: int) -> ModelInfo:
    opset = next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    inputs = tuple((spec.name, str(spec.dtype), tuple("?" if d is None else d for d in spec.shape))
                   for spec in input_specs(proto))
    return ModelInfo(path=path, sha256=sha256, size_bytes=size, parameter_count=parameter_count(proto),
                     opset=opset, producer=f"{proto.producer_name} {proto.producer_version}".strip(),
                     inputs=inputs)


def scan_model(model: str | os.PathLike[str] | onnx.ModelProto, *, level: str = "block",
               taps: tuple[str, ...] | list[str] = (), inputs: str | os.PathLike[str] | Mapping[str, np.ndarray] | None = None,
               samples: int = 2560, seed: int = 0, dims: Mapping[str, int] | None = None,
               int_range: tuple[int, int] | None = None, reduce: str = "pool", cka_batch: int | None = 256,
               estimator: str = "unbiased", aggregate: str = "cka", epsilon: float = 0.8, beta: float = 100.0,
               device: str = "auto", backend: str = "auto", max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
               progress: ProgressCallback | None = None) -> ScanResult:
    """Measure layer similarity and MSRS of an ONNX model (path or in-memory ModelProto).

    Defaults follow the RedTest reference code: block-level IRs, pooled, unbiased CKA per batch
    of 256 over 2,560 samples, ε = 0.8, β = 100. Raises RedauditError subclasses for user errors.
    """
    started = time.perf_counter()
    config = ScanConfig(level=level, reduce=reduce, cka_batch=cka_batch, estimator=estimator,
                        aggregate=aggregate, epsilon=float(epsilon), beta=float(beta), seed=seed,
                        samples=samples, device=device, backend=backend, taps=tuple(taps),
                        dims=tuple(sorted((dims or {}).items())),
                        int_range=tuple(int_range) if int_range else None, max_model_bytes=max_model_bytes)
    _validate(config)
    array_backend = select_backend(backend)
    if isinstance(model, onnx.ModelProto):
        check_model(model, "in-memory model")
        proto, path = model, "<in-memory>"
        sha256 = model_sha256_of_proto(model)
        size = model.ByteSize()
    else:
        loaded = load_model(model, max_bytes=max_model_bytes)
        proto, path, sha256, size = loaded.proto, loaded.path, loaded.sha256, loaded.size_bytes
    loaded_at = time.perf_counter()

    index = GraphIndex.build(proto)
    selection = select_taps(index, level, tuple(taps))
    augmented = augment(proto, index, selection.points, reduce)
    session, provider = create_session(augmented.proto, device)
    specs = input_specs(proto)
    fixed_batches = {spec.fixed_batch for spec in specs if spec.fixed_batch}
    runner = BatchRunner(session, augmented.fetch_names, chunk=min(fixed_batches) if fixed_batches else None)
    probe = make_probe(specs, inputs, samples, seed, dims, int_range)
    batch_size = cka_batch if cka_batch is not None else probe.samples
    if probe.samples < batch_size:
        raise ConfigError(f"only {probe.samples} probe samples but --cka-batch is {batch_size}; "
                          "pass more samples or lower --cka-batch")
    minimum = 4 if estimator == "unbiased" else 2
    if batch_size < minimum:
        raise ConfigError(f"at least {minimum} probe samples are needed for the {estimator} estimator")
    config = replace(config, dims=tuple(sorted(probe.dims.items())))  # defaults included
    tapped_at = time.perf_counter()

    run_size = batch_size if cka_batch is not None else min(_RUN_CHUNK, batch_size)
    batch_count = probe.samples // batch_size
    used_samples = batch_count * batch_size
    layers = list(selection.points)
    keep = list(range(len(layers)))
    warnings = [*selection.warnings, *probe.warnings]
    accumulator: SimilarityAccumulator | None = None
    pending_features: list[list[np.ndarray]] = []
    run_seconds = 0.0
    done = 0

    def timed_run(batch: dict[str, np.ndarray]) -> tuple[list[np.ndarray], float]:
        begin = time.perf_counter()
        outputs = runner.run(batch)
        return outputs, time.perf_counter() - begin

    with ThreadPoolExecutor(max_workers=1) as pool:
        source = iter(probe.batches(run_size, used_samples))
        future = pool.submit(timed_run, next(source)) if used_samples else None
        while future is not None:
            outputs, seconds = future.result()
            run_seconds += seconds
            following = next(source, None)
            future = pool.submit(timed_run, following) if following is not None else None
            count = outputs[0].shape[0]
            if accumulator is None:
                keep = [i for i, out in enumerate(outputs) if out.ndim >= 1 and out.shape[0] == count]
                for i in sorted(set(range(len(layers))) - set(keep)):
                    warnings.append(f"tap {layers[i].tensor!r} has no batch axis at run time "
                                    f"(shape {outputs[i].shape}); dropped")
                if len(keep) < 2:
                    raise ConfigError("fewer than 2 tapped tensors carry the batch axis at run time; "
                                      "choose taps with --tap")
                accumulator = SimilarityAccumulator(len(keep), array_backend, estimator, aggregate)
            features = [outputs[i].reshape(count, -1) for i in keep]
            done += count
            if cka_batch is None:
                pending_features.append(features)
                if done >= used_samples:
                    accumulator.add_batch([np.concatenate([part[i] for part in pending_features])
                                           for i in range(len(keep))])
            else:
                accumulator.add_batch(features)
            if progress is not None:
                progress(done, used_samples)
    assert accumulator is not None
    summary = accumulator.finish(config.epsilon, config.beta)
    finished = time.perf_counter()

    kept_layers = [layers[i] for i in keep]
    layer_issues = {kept_layers[i].tensor: text for i, text in summary.layer_issues.items()}
    if summary.excluded_layers:
        names = ", ".join(kept_layers[i].tensor for i in summary.excluded_layers)
        warnings.append(f"MSRS leaves out {len(summary.excluded_layers)} degenerate layer(s) (constant or "
                        f"non-finite in every batch): {names}")
    if summary.msrs.nan_batches:
        warnings.append(f"{summary.msrs.nan_batches} of {batch_count} batches had degenerate layers and were "
                        "skipped in MSRS")
    dropped = probe.samples - used_samples
    if dropped:
        warnings.append(f"dropped the final partial batch of {dropped} samples (--cka-batch {batch_size})")
    if not probe.real:
        warnings.append("probe inputs are synthetic (random); pass real data with --inputs for meaningful numbers")
    return ScanResult(
        model=_model_info(proto, path, sha256, size),
        layers=[LayerInfo(name=p.tensor, op=p.op, shape=tuple(p.shape), node=p.node) for p in kept_layers],
        similarity=summary.similarity, msrs=summary.msrs.mean, msrs_std=summary.msrs.std,
        msrs_batches=summary.msrs.per_batch, config=_with_level(config, selection.level), samples=used_samples,
        batches=batch_count, dropped_samples=dropped, nan_batches=summary.msrs.nan_batches,
        inputs_real=probe.real, input_hash=probe.digest, provider=provider, backend=array_backend.name,
        redaudit_version=__version__,
        timings={"load_s": loaded_at - started, "tap_s": tapped_at - loaded_at, "run_s": run_seconds,
                 "similarity_s": (finished - tapped_at) - run_seconds, "total_s": finished - started},
        layer_issues=layer_issues, warnings=warnings)


def _with_level(config: ScanConfig, used_level: str) -> ScanConfig:
    """Record the level actually used (a block scan of a block-less model is a layer scan)."""
    return replace(config, level=used_level)
