"""The probe/similarity options shared by every command that runs a scan (scan, check, prune)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from redaudit.cli.common import (MAX_MODEL_SIZE_AUTO, MAX_MODEL_SIZE_HELP, parse_cka_batch, parse_dims,
                                 parse_model_size, parse_pairs, parse_size)
from redaudit.cli.params import CountOrAll, InputPath, Number, count, number
from redaudit.core.spec import (AGGREGATES, BACKENDS, DEFAULT_MEMORY_SHARE, DEVICES, ESTIMATORS, LEVELS, MAX_INT32,
                                 MAX_INT64, MAX_SEED, REDUCTIONS, ScanSpec)

_DEFAULT = ScanSpec()

_OPTIONS = [
    click.option("--level", type=click.Choice(LEVELS), default=_DEFAULT.level, show_default=True,
                 help="IR granularity: residual blocks / transformer layers (paper), sublayer (attention and MLP "
                      "halves), weighted layers, or every operator output."),
    click.option("--tap", "taps", multiple=True, metavar="NAME",
                 help="Tap this tensor explicitly (repeatable); overrides --level."),
    click.option("--inputs", type=InputPath(), default=None,
                 help=".npz with one array per model input (first axis = samples, also for a legacy past_N: "
                      "(N, 2, heads, past, head_dim), np.swapaxes of the graph's (2, N, …); with N = 2 the "
                      "layouts look alike and are read samples first). Default: synthetic."),
    click.option("--text", type=InputPath(), default=None, metavar="FILE",
                 help="Probe a language model with this text, tokenized with --tokenizer into windows of its "
                      "sequence length (--dim; default 64 tokens)."),
    click.option("--tokenizer", type=InputPath(dir_okay=True), default=None, metavar="DIR",
                 help="Folder of the tokenizer.json for --text (needs the tokenizers package: redaudit[lm])."),
    click.option("--samples", type=count(1, MAX_INT32), default=_DEFAULT.samples, show_default=True,
                 help="Number of probe samples (paper: 10 batches of 256)."),
    click.option("--seed", type=Number(int, 0, MAX_SEED), default=_DEFAULT.seed, show_default=True, help="Seed for synthetic inputs."),
    click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE",
                 help="Value of a symbolic input dimension (repeatable); 0 only for a key/value cache's past length."),
    click.option("--int-range", nargs=2, type=Number(int, -MAX_INT64 - 1, MAX_INT64), default=None, metavar="LOW HIGH",
                 help="Range [LOW, HIGH) for synthetic integer inputs (default 0 256)."),
    click.option("--reduce", type=click.Choice(REDUCTIONS), default=_DEFAULT.reduce, show_default=True,
                 help="IR reduction: global average pool (mean over tokens for N,T,D) or flatten."),
    click.option("--layout", "layouts", multiple=True, metavar="NAME=tokens|channels",
                 help="How to pool a 3-D tap: (N, T, D) tokens or (N, C, L) channels (repeatable)."),
    click.option("--cka-batch", type=CountOrAll(1, MAX_INT32), default=str(_DEFAULT.cka_batch), show_default=True, metavar="N|all",
                 help="Samples per CKA batch; 'all' = one batch of every sample."),
    click.option("--estimator", type=click.Choice(ESTIMATORS), default=_DEFAULT.estimator, show_default=True,
                 help="HSIC estimator."),
    click.option("--aggregate", type=click.Choice(AGGREGATES), default=_DEFAULT.aggregate, show_default=True,
                 help="Reported matrix: mean of per-batch CKA (paper) or CKA of batch-averaged HSIC."),
    click.option("--epsilon", type=number(-1.0, 1.0), default=_DEFAULT.epsilon, show_default=True, help="MSRS similarity threshold ε."),
    click.option("--beta", type=number(0.0, 1e6, low_open=True), default=_DEFAULT.beta, show_default=True, help="MSRS steepness β."),
    click.option("--device", type=click.Choice(DEVICES), default=_DEFAULT.device, show_default=True,
                 help="onnxruntime execution provider."),
    click.option("--backend", type=click.Choice(BACKENDS), default=_DEFAULT.backend, show_default=True,
                 help="Array backend for the CKA math."),
    click.option("--threads", type=count(1, 1024), default=None, metavar="N",
                 help="onnxruntime threads per session (default: every core; on the CPU a small model runs several CKA batches "
                      "at once on a share each, memory allowing; set N for one batch at a time, or when several scans "
                      "share a machine)."),
    click.option("--max-model-size", default=MAX_MODEL_SIZE_AUTO, show_default=True, metavar="SIZE|auto",
                 help=MAX_MODEL_SIZE_HELP),
    click.option("--max-memory", default=None, metavar="SIZE",
                 help=f"Memory the scan may use; sizes onnxruntime's micro-batch, never the CKA batch "
                      f"(default: {DEFAULT_MEMORY_SHARE:.0%} of the available memory)."),
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
        text=options.pop("text"), tokenizer=options.pop("tokenizer"),
        samples=options.pop("samples"), seed=options.pop("seed"), dims=parse_dims(options.pop("dims")),
        int_range=tuple(int_range) if int_range else None, reduce=options.pop("reduce"),
        layouts=parse_pairs(options.pop("layouts"), "--layout", "NAME=tokens|channels"),
        cka_batch=_cka_batch(options.pop("cka_batch")), estimator=options.pop("estimator"),
        aggregate=options.pop("aggregate"), epsilon=options.pop("epsilon"), beta=options.pop("beta"),
        device=options.pop("device"), backend=options.pop("backend"), threads=options.pop("threads"),
        max_model_bytes=parse_model_size(options.pop("max_model_size")),
        max_memory_bytes=_optional_size(options.pop("max_memory"), "--max-memory"),
    )


def _optional_size(value: str | None, option: str) -> int | None:
    return None if value is None else parse_size(value, option)


def _cka_batch(value: Any) -> int | None:
    """Already converted by the option type; a raw string when a caller passes one directly."""
    return parse_cka_batch(value) if isinstance(value, str) else value
