"""How a CPU scan splits its work into lanes: several CKA batches (or, with one CKA batch of
every sample, several probe chunks) in onnxruntime at once, each on its share of the cores.

Why: on a small model onnxruntime's intra-op threads meet at a barrier after every operator, and
the CKA math beside them takes a core those barriers wait for; k lanes that each run a whole batch
never wait for each other (docs/performance.md has the measurements). The memory estimate
(:mod:`redaudit.core.memory`) decides how many lanes fit; the engine runs them.
"""
from __future__ import annotations

#: Samples per onnxruntime call (a probe chunk, one lane's work) when one CKA batch holds every
#: sample, on the CPU and on CUDA: see :func:`run_chunk`.
RUN_CHUNK_CPU = 64
RUN_CHUNK_CUDA = 256
#: At most this many CKA batches in flight at once on the CPU (each lane multiplies the memory a
#: batch holds, see :func:`fit_lanes`).
MAX_LANES = 8
#: Lanes only for models whose weights are below this: their operators are small, so onnxruntime's
#: threads spend their time at barriers and lanes pay; a large model's operators keep every core
#: busy, and its scan keeps the memory bound issue 21 measured (a decoder at 1.09x plain onnxruntime).
LANES_BELOW_WEIGHT_BYTES = 256 * 1024**2


def run_chunk(device_runtime: bool = False) -> int:
    """Samples per onnxruntime call when one CKA batch holds every sample (``--cka-batch all``):
    the probe is cut into chunks of this size, the unit a lane runs.

    Why 64 on the CPU: every scan makes a fresh session, whose first runs pay for each page of its
    arena, and a 256-sample chunk's arena is four times a 64's. Issue 27's CNN, pooled, one batch
    of 1,024, 2 lanes, quiet, 5 interleaved scans: chunks of 256 / 128 / 64 took 1.02 / 0.90 /
    0.83 s (L = 15) and 3.85 / 2.71 / 2.62 s (L = 45). CUDA keeps 256: a GPU needs large calls."""
    return RUN_CHUNK_CUDA if device_runtime else RUN_CHUNK_CPU


def fit_lanes(parts: dict[str, int], budget: int | None, *, batches: int, cores: int,
              per_batch: int | None, run_live: int) -> tuple[int, dict[str, int]] | None:
    """How many CKA batches a CPU scan computes at once ("lanes") and the parts that holds, or
    None for one (the streaming pipeline: onnxruntime on every core runs batch k+1 while this
    thread scores batch k).

    Why lanes: on a small model onnxruntime's intra-op threads meet at a barrier after every
    operator, and the CKA math beside them takes a core those barriers wait for; k lanes that each
    run a whole batch (inference with cores ÷ k threads, then its Grams and HSIC on one BLAS
    thread) never wait for each other. Issue 27's CNN on 2 cores, 1,024 samples, quiet, scans
    interleaved: 0.749 s vs 0.860 s with one lane (L = 15), 2.434 s vs 2.608 s (L = 45);
    docs/performance.md.

    Each lane holds one batch's tapped outputs and the float64 copy of its largest layer
    (``per_batch``) and Gram rows; each concurrent onnxruntime run its live tensors (``run_live``,
    the first run's peak) on top of the one arena the estimate already counts (measured on magika,
    flattened, 2 lanes: estimate 1.10 GB, peak 0.92-1.06 GB; one lane 0.80 / 0.81 GB); one more
    probe batch waits. The most lanes (≤ cores, ≤ batches, ≤ :data:`MAX_LANES`) whose total fits
    ``budget`` are used; results are folded in batch order, so the matrix is the same whatever the
    lane count.

    With ``--cka-batch all`` (``per_batch`` None) a lane is one probe chunk's inference: its
    outputs join the features of the one CKA batch, which ``parts`` already counts in full, and
    the Grams are formed once at the end, so only the concurrent runs and probe chunks add up.
    Measured on the same CNN, pooled, one batch of 1,024 (vs_peers' pooled case): onnxruntime
    over the four 256-sample chunks took 0.99 s with one run at a time on 2 threads and 0.66 s as
    2 lanes of 1 thread (L = 15; L = 45: 2.93 vs 2.0 s)."""
    most = min(cores, batches, MAX_LANES)
    for lanes in range(most, 1, -1):
        held = {"features": parts["features"]} if per_batch is None else \
            {"features": lanes * per_batch, "gram": lanes * parts["gram"]}
        scaled = dict(parts, **held, activations=parts["activations"] + (lanes - 1) * run_live,
                      probe=(lanes + 1) * parts["probe"] // 2)
        if budget is None or sum(v for k, v in scaled.items() if k != "process") <= budget:
            return lanes, scaled
    return None
