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
from onnx import numpy_helper, shape_inference


@dataclass(frozen=True)
class CostFigures:
    parameters: int
    flops: int
    latency_ms: float


def parameter_count(proto: onnx.ModelProto) -> int:
    """Number of floating-point weights (BatchNorm running statistics included, as exported)."""
    total = 0
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        if np.issubdtype(array.dtype, np.floating):
            total += int(array.size)
    return total


def _static_shape(value_info: onnx.ValueInfoProto) -> list[int]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else 1 for d in dims]  # symbolic batch → 1


def flop_count(proto: onnx.ModelProto) -> int:
    """FLOPs (2 × MACs) of one sample through the Conv, Gemm and MatMul nodes."""
    inferred = shape_inference.infer_shapes(proto)
    shapes = {vi.name: _static_shape(vi) for vi in (*inferred.graph.value_info, *inferred.graph.input,
                                                     *inferred.graph.output)}
    shapes.update({init.name: list(init.dims) for init in proto.graph.initializer})
    macs = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            weight = shapes.get(node.input[1])
            out = shapes.get(node.output[0])
            if weight and out:
                # out: (N, C_out, H, W); weight: (C_out, C_in/groups, kH, kW)
                macs += int(np.prod(out[1:])) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            out = shapes.get(node.output[0])
            if a and b and out:
                trans_a = any(att.name == "transA" and att.i for att in node.attribute)
                inner = a[-2] if trans_a else a[-1]
                macs += int(np.prod(out[1:])) * int(inner)
    return 2 * macs


def latency_ms(model_bytes: bytes, sample: np.ndarray, repeats: int = 30) -> float:
    """Median single-sample latency on one onnxruntime thread, after one warm-up run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
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
