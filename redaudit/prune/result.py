"""Plain-data results of ``prune``: what could be removed, what was, and how close the result is."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx

from redaudit.prune.lm_metrics import NextTokenAgreement
from redaudit.prune.verify import Latency, OutputAgreement


@dataclass(frozen=True)
class Candidate:
    """A removable block with its measurements. ``similarity`` is the policy's score (higher =
    removed first): for ``bi`` the mean token cosine of block input and output, for ``cka``
    CKA(block input, block output) averaged over the probe batches; shares are fractions of the
    whole model (0..1)."""

    index: int
    name: str
    entry: str
    kind: str
    nodes: int
    similarity: float
    params: int
    flops: int
    param_share: float
    flop_share: float


@dataclass
class PruneResult:
    """Outcome of :func:`redaudit.prune.prune_model`. In ``--list`` mode only ``candidates`` and
    the probe fields are filled; ``model`` is the pruned ModelProto (never written if invalid)."""

    source: str
    source_sha256: str
    candidates: list[Candidate]
    removed: list[str] = field(default_factory=list)
    model: onnx.ModelProto | None = None
    output_path: str | None = None
    agreement: list[OutputAgreement] = field(default_factory=list)
    drift: float = math.nan
    params_before: int = 0
    params_after: int = 0
    size_before: int = 0
    size_after: int = 0
    latency: Latency | None = None
    msrs_before: float = math.nan
    msrs_after: float = math.nan
    probe_real: bool = False
    samples: int = 0
    iterative: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)
    recorded_scan_id: int | None = None
    warnings: list[str] = field(default_factory=list)
    policy: str = "bi"
    policy_description: str = ""
    healed: list[dict[str, Any]] = field(default_factory=list)  # one entry per healed span
    next_token: NextTokenAgreement | None = None  # a causal LM's next-token verification

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else math.nan

    @property
    def size_ratio(self) -> float:
        return self.size_after / self.size_before if self.size_before else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {key: clean(item) for key, item in value.items()}
            if isinstance(value, list):
                return [clean(item) for item in value]
            return value

        data = {
            "source": self.source, "source_sha256": self.source_sha256,
            "policy": {"name": self.policy, "score": self.policy_description}, "healed": self.healed,
            "candidates": [asdict(candidate) for candidate in self.candidates],
            "removed": list(self.removed), "output_path": self.output_path,
            "iterative": self.iterative, "steps": self.steps,
            "agreement": [asdict(item) for item in self.agreement], "drift": self.drift,
            "next_token": None if self.next_token is None else self.next_token.to_dict(),
            "params": {"before": self.params_before, "after": self.params_after, "ratio": self.params_ratio},
            "file_size": {"before": self.size_before, "after": self.size_after, "ratio": self.size_ratio},
            "latency": None if self.latency is None else {**asdict(self.latency), "ratio": self.latency.ratio},
            "msrs": {"before": self.msrs_before, "after": self.msrs_after},
            "probe": {"real": self.probe_real, "samples": self.samples},
            "recorded_scan_id": self.recorded_scan_id, "warnings": list(self.warnings),
        }
        return clean(data)
