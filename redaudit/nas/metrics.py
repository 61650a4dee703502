"""Cost figures the paper logs next to accuracy and MSRS: parameters, FLOPs and latency.

All three are measured on the exported ONNX graph, the artefact a user would deploy, not on
the torch module: parameters are the float initializers, FLOPs are 2 × multiply-accumulates
of Conv / Gemm / MatMul from inferred shapes (one sample), latency is the median wall time of
single-sample onnxruntime inference on one thread.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx

from redaudit.core.costs import flop_count, parameter_count


@dataclass(frozen=True)
class CostFigures:
    parameters: int
    flops: int
    latency_ms: float


def latency_ms(model_bytes: bytes, sample: np.ndarray, repeats: int = 30) -> float:
    """Median single-sample latency on one onnxruntime thread, after one warm-up run."""
    from redaudit.core.run import SessionFactory

    session, _ = SessionFactory("cpu", threads=1).create(model_bytes, "the candidate")
    name = session.get_inputs()[0].name
    feed = {name: sample[:1]}
    session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def cost_figures(model_bytes: bytes, sample: np.ndarray) -> CostFigures:
    proto = onnx.load_from_string(model_bytes)
    return CostFigures(parameters=parameter_count(proto), flops=flop_count(proto),
                       latency_ms=latency_ms(model_bytes, sample))
