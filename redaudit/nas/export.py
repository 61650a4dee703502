"""Export a trained candidate to ONNX and find the tensors the scan should compare.

The TorchScript exporter (``dynamo=False``) writes one self-contained file with readable
tensor names such as ``/stages/stages.0/stages.0.1/act/Relu_output_0``; the batch axis is
dynamic so the same file serves single-sample latency and batched probing.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from redaudit import atomic
from redaudit.errors import RedauditError
from redaudit.nas.train import TrainedModel, require_torch

INPUT_NAME = "x"
OUTPUT_NAME = "logits"
OPSET = 17


class NasExportError(RedauditError):
    """The exported candidate failed the ONNX checker or disagrees with the torch model."""


@dataclass(frozen=True)
class ExportedModel:
    """The ONNX bytes of one candidate and the IR tensor names (stem + every block output)."""

    model_bytes: bytes
    taps: tuple[str, ...]

    def save(self, path: str | Path) -> Path:
        """Write the model whole or not at all (:mod:`redaudit.atomic`), byte for byte as exported.
        A candidate is exported into memory, so it is one self-contained file: protobuf's 2 GB
        limit bounds it, and no external data file is ever written beside it."""
        return atomic.write_bytes(path, self.model_bytes)


def export_candidate(trained: TrainedModel) -> ExportedModel:
    """Serialise ``trained`` (eval mode), run the ONNX checker, and locate its block outputs."""
    torch = require_torch()
    example = torch.zeros((2, *trained.sample_shape), dtype=torch.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice is expected
        torch.onnx.export(trained.module, (example,), buffer, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    model_bytes = buffer.getvalue()
    proto = onnx.load_from_string(model_bytes)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:  # pragma: no cover - exporter bug
        raise NasExportError(f"exported candidate fails the ONNX checker: {exc}") from None
    taps = tap_tensors(proto, len(trained.module.tap_modules()))
    return ExportedModel(model_bytes=model_bytes, taps=taps)


def tap_tensors(proto: onnx.ModelProto, expected: int) -> tuple[str, ...]:
    """Outputs of the ``.../act/Relu`` nodes in graph order: the stem then each block.

    Every block of the family ends in a module called ``act``, so the node names identify
    the block outputs without guessing from the graph's shape.
    """
    names = tuple(node.output[0] for node in proto.graph.node
                  if node.op_type == "Relu" and node.name.split("/")[-2:-1] == ["act"])
    if len(names) != expected:
        raise NasExportError(f"expected {expected} block outputs in the exported graph, found {len(names)}")
    return names


def max_output_difference(exported: ExportedModel, trained: TrainedModel, x: np.ndarray) -> float:
    """Largest |onnxruntime − torch| logit difference on ``x``: the export's fidelity check."""
    from redaudit.core.run import SessionFactory
    from redaudit.nas.train import predict_logits

    session, _ = SessionFactory("cpu").create(exported.model_bytes, "the exported candidate")
    onnx_logits = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    return float(np.max(np.abs(onnx_logits - predict_logits(trained, x))))
