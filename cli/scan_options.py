"""The probe/similarity options shared by every command that runs a scan (scan, check, prune)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from redaudit.cli.common import (MAX_MODEL_SIZE_AUTO, MAX_MODEL_SIZE_HELP, parse_cka_batch, parse_dims,
                                 parse_model_size, parse_pairs)
from redaudit.core.spec import (AGGREGATES, BACKENDS, DEVICES, ESTIMATORS, LEVELS, REDUCTIONS, ScanSpec)

_DEFAULT = ScanSpec()

_OPTIONS = [
    click.option("--level", type=click.Choice(LEVELS), default=_DEFAULT.level, show_default=True,
                 help="IR granularity: residual blocks (paper), weighted layers, or every operator output."),
    click.option("--tap", "taps", multiple=True, metavar="NAME",
                 help="Tap this tensor explicitly (repeatable); overrides --level."),
    click.option("--inputs", type=click.Path(dir_okay=False), default=None,
                 help=".npz with one array per model input (first axis = samples). Default: synthetic."),
    click.option("--samples", type=int, default=_DEFAULT.samples, show_default=True,
                 help="Number of probe samples (paper: 10 batches of 256)."),
    click.option("--seed", type=int, default=_DEFAULT.seed, show_default=True, help="Seed for synthetic inputs."),
    click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE",
                 help="Value of a symbolic input dimension (repeatable)."),
    click.option("--int-range", nargs=2, type=int, default=None, metavar="LOW HIGH",
                 help="Range [LOW, HIGH) for synthetic integer inputs (default 0 256)."),
    click.option("--reduce", type=click.Choice(REDUCTIONS), default=_DEFAULT.reduce, show_default=True,
                 help="IR reduction: global average pool (mean over tokens for N,T,D) or flatten."),
    click.option("--layout", "layouts", multiple=True, metavar="NAME=tokens|channels",
                 help="How to pool a 3-D tap: (N, T, D) tokens or (N, C, L) channels (repeatable)."),
    click.option("--cka-batch", default=str(_DEFAULT.cka_batch), show_default=True, metavar="N|all",
                 help="Samples per CKA batch; 'all' = one batch of every sample."),
    click.option("--estimator", type=click.Choice(ESTIMATORS), default=_DEFAULT.estimator, show_default=True,
                 help="HSIC estimator."),
    click.option("--aggregate", type=click.Choice(AGGREGATES), default=_DEFAULT.aggregate, show_default=True,
                 help="Reported matrix: mean of per-batch CKA (paper) or CKA of batch-averaged HSIC."),
    click.option("--epsilon", type=float, default=_DEFAULT.epsilon, show_default=True, help="MSRS similarity threshold ε."),
    click.option("--beta", type=float, default=_DEFAULT.beta, show_default=True, help="MSRS steepness β."),
    click.option("--device", type=click.Choice(DEVICES), default=_DEFAULT.device, show_default=True,
                 help="onnxruntime execution provider."),
    click.option("--backend", type=click.Choice(BACKENDS), default=_DEFAULT.backend, show_default=True,
                 help="Array backend for the CKA math."),
    click.option("--threads", type=int, default=None, metavar="N",
                 help="onnxruntime threads per session (default: all cores; lower it when several scans share a machine)."),
    click.option("--max-model-size", default=MAX_MODEL_SIZE_AUTO, show_default=True, metavar="SIZE|auto",
                 help=MAX_MODEL_SIZE_HELP),
]


def scan_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def scan_spec(options: dict[str, Any]) -> ScanSpec:
    """Pop the parsed click options and validate them once, as the library does: a ScanSpec."""
    int_range = options.pop("int_range")
    return ScanSpec(
        level=options.pop("level"), taps=tuple(options.pop("taps")), inputs=options.pop("inputs"),
        samples=options.pop("samples"), seed=options.pop("seed"), dims=parse_dims(options.pop("dims")),
        int_range=tuple(int_range) if int_range else None, reduce=options.pop("reduce"),
        layouts=parse_pairs(options.pop("layouts"), "--layout", "NAME=tokens|channels"),
        cka_batch=parse_cka_batch(options.pop("cka_batch")), estimator=options.pop("estimator"),
        aggregate=options.pop("aggregate"), epsilon=options.pop("epsilon"), beta=options.pop("beta"),
        device=options.pop("device"), backend=options.pop("backend"), threads=options.pop("threads"),
        max_model_bytes=parse_model_size(options.pop("max_model_size")),
    )
