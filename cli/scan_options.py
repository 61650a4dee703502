"""The probe/similarity options shared by every command that runs a scan (scan, check, prune)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from redaudit.cli.common import parse_cka_batch, parse_dims, parse_size

_OPTIONS = [
    click.option("--level", type=click.Choice(["block", "layer", "op"]), default="block", show_default=True,
                 help="IR granularity: residual blocks (paper), weighted layers, or every operator output."),
    click.option("--tap", "taps", multiple=True, metavar="NAME",
                 help="Tap this tensor explicitly (repeatable); overrides --level."),
    click.option("--inputs", type=click.Path(dir_okay=False), default=None,
                 help=".npz with one array per model input (first axis = samples). Default: synthetic."),
    click.option("--samples", type=click.IntRange(1), default=2560, show_default=True,
                 help="Number of probe samples (paper: 10 batches of 256)."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed for synthetic inputs."),
    click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE",
                 help="Value of a symbolic input dimension (repeatable)."),
    click.option("--int-range", nargs=2, type=int, default=None, metavar="LOW HIGH",
                 help="Range [LOW, HIGH) for synthetic integer inputs (default 0 256)."),
    click.option("--reduce", type=click.Choice(["pool", "flatten"]), default="pool", show_default=True,
                 help="IR reduction: global average pool (mean over tokens for N,T,D) or flatten."),
    click.option("--cka-batch", default="256", show_default=True, metavar="N|all",
                 help="Samples per CKA batch; 'all' = one batch of every sample."),
    click.option("--estimator", type=click.Choice(["unbiased", "biased"]), default="unbiased", show_default=True,
                 help="HSIC estimator."),
    click.option("--aggregate", type=click.Choice(["cka", "hsic"]), default="cka", show_default=True,
                 help="Reported matrix: mean of per-batch CKA (paper) or CKA of batch-averaged HSIC."),
    click.option("--epsilon", type=float, default=0.8, show_default=True, help="MSRS similarity threshold ε."),
    click.option("--beta", type=float, default=100.0, show_default=True, help="MSRS steepness β."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                 help="onnxruntime execution provider."),
    click.option("--backend", type=click.Choice(["auto", "numpy", "cupy"]), default="auto", show_default=True,
                 help="Array backend for the CKA math."),
    click.option("--max-model-size", default="2G", show_default=True, metavar="SIZE",
                 help="Refuse models (with external data) larger than this."),
]


def scan_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def scan_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """Map parsed click options (popping them) to keyword arguments of ``redaudit.scan``."""
    int_range = options.pop("int_range")
    return dict(
        level=options.pop("level"), taps=tuple(options.pop("taps")), inputs=options.pop("inputs"),
        samples=options.pop("samples"), seed=options.pop("seed"), dims=parse_dims(options.pop("dims")),
        int_range=tuple(int_range) if int_range else None, reduce=options.pop("reduce"),
        cka_batch=parse_cka_batch(options.pop("cka_batch")), estimator=options.pop("estimator"),
        aggregate=options.pop("aggregate"), epsilon=options.pop("epsilon"), beta=options.pop("beta"),
        device=options.pop("device"), backend=options.pop("backend"),
        max_model_bytes=parse_size(options.pop("max_model_size")),
    )
