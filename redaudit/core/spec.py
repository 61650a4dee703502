"""``ScanSpec``: every option of a scan, validated once, with each default defined once.

The CLI, the library, prune, nas and the service's job queue all describe a scan with this one
frozen object. It is validated in ``__post_init__`` (so an invalid spec cannot exist), it
round-trips through JSON (a queued job stores exactly this), and its defaults are the RedTest
reference code's: block-level IRs, pooled, unbiased CKA per batch of 256 over 2,560 samples,
ε = 0.8, β = 100.

Bounds are not arbitrary: they are what the history database can store on every backend
(PostgreSQL INTEGER columns hold at most 2³¹ − 1) and what a numpy generator accepts, so a
scan that would fail only when it is recorded is refused before any work.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

from redaudit.errors import ConfigError

LEVELS = ("block", "sublayer", "layer", "op")
#: ``tap`` is the level a result records when explicit taps chose the IRs.
RESULT_LEVELS = (*LEVELS, "tap")
REDUCTIONS = ("pool", "flatten")
ESTIMATORS = ("unbiased", "biased")
AGGREGATES = ("cka", "hsic")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "numpy", "cupy")
LAYOUTS = ("tokens", "channels")

DEFAULT_SAMPLES = 2560
DEFAULT_CKA_BATCH = 256
DEFAULT_EPSILON = 0.8
DEFAULT_BETA = 100.0
#: ``--max-model-size`` default (``auto``): no fixed bound; only a model whose weights cannot
#: fit in the memory available is refused (core/model.py). A number is the user's own bound.
DEFAULT_MAX_MODEL_BYTES: int | None = None
#: The service's default bound on one upload (model, bundle or inputs): untrusted input.
DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024**3
#: ``--max-memory`` left open (None) means this share of the memory available when the scan runs:
#: a machine-dependent default is resolved on the machine that scans (a queued job may run elsewhere).
DEFAULT_MEMORY_SHARE = 0.5

#: Largest count stored in an INTEGER column on PostgreSQL (samples, dims).
MAX_INT32 = 2**31 - 1
#: numpy's default_rng takes any non-negative int; the history stores the seed as a 64-bit int.
MAX_SEED = 2**63 - 1
MAX_INT64 = 2**63 - 1
#: A model above 1 TiB is not something this tool can load; refusing it early keeps sizes finite.
MAX_MODEL_BYTES_LIMIT = 2**40
#: The largest --max-memory accepted (1 PiB): anything above is a typo, not a machine.
MAX_MEMORY_BYTES_LIMIT = 2**50


def min_batch(estimator: str) -> int:
    """Smallest CKA batch the estimator is defined for (the unbiased one divides by n − 3)."""
    return 4 if estimator == "unbiased" else 2


def _int(name: str, value: Any, low: int, high: int, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{option} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{option} must be between {low:,} and {high:,}, got {value:,}")
    return value


def _choice(value: Any, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise ConfigError(f"unknown {option} {value!r}; choose one of {', '.join(choices)}")
    return value


def _float(value: Any, option: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{option} must be a finite number, got {value!r}")
    return number


def _named_values(value: Any, option: str, form: str, convert: Any) -> tuple[tuple[str, Any], ...]:
    """A mapping or (name, value) pairs as sorted pairs, each value checked by ``convert``."""
    items = value.items() if isinstance(value, dict) else value or ()
    out: dict[str, Any] = {}
    for item in items:
        try:
            name, raw = item
        except (TypeError, ValueError):
            raise ConfigError(f"{option} needs {form}, got {item!r}") from None
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{option} needs a name, got {name!r}")
        out[name] = convert(name, raw)
    return tuple(sorted(out.items()))


@dataclass(frozen=True)
class ScanSpec:
    """What to scan and how. ``inputs`` is the path of an .npz of probe inputs (None: synthetic);
    in-memory arrays are passed to :func:`redaudit.scan` beside the spec, not inside it."""

    level: str = "block"
    taps: tuple[str, ...] = ()
    inputs: str | None = None
    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    dims: tuple[tuple[str, int], ...] = ()
    int_range: tuple[int, int] | None = None
    reduce: str = "pool"
    cka_batch: int | None = DEFAULT_CKA_BATCH  # None means "all": one batch of every sample
    estimator: str = "unbiased"
    aggregate: str = "cka"
    epsilon: float = DEFAULT_EPSILON
    beta: float = DEFAULT_BETA
    device: str = "auto"
    backend: str = "auto"
    max_model_bytes: int | None = DEFAULT_MAX_MODEL_BYTES  # None: what fits in the memory available
    layouts: tuple[tuple[str, str], ...] = ()  # per-tensor override of the 3-D layout
    threads: int | None = None  # onnxruntime intra-op threads (None: every core, shared by a CPU scan's lanes)
    text: str | None = None  # a text file to probe a language model with (tokenized with ``tokenizer``)
    tokenizer: str | None = None  # folder of a tokenizer.json (or the file)
    #: Memory budget in bytes that sizes onnxruntime's micro-batch (None: DEFAULT_MEMORY_SHARE of
    #: what is available at run time). It never changes a number: the CKA batch stays ``cka_batch``.
    max_memory_bytes: int | None = None

    #: Keys that change MSRS or similarity values; scans are comparable only if they match.
    RESULT_KEYS: ClassVar[tuple[str, ...]] = ("level", "reduce", "cka_batch", "estimator", "aggregate",
                                              "epsilon", "beta", "taps")

    def __post_init__(self) -> None:
        _choice(self.level, RESULT_LEVELS, "--level")
        _choice(self.reduce, REDUCTIONS, "--reduce")
        _choice(self.estimator, ESTIMATORS, "--estimator")
        _choice(self.aggregate, AGGREGATES, "--aggregate")
        _choice(self.device, DEVICES, "--device")
        _choice(self.backend, BACKENDS, "--backend")
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "samples", _int("samples", self.samples, 1, MAX_INT32, "--samples"))
        set_(self, "seed", _int("seed", self.seed, 0, MAX_SEED, "--seed"))
        if self.cka_batch is not None:
            set_(self, "cka_batch", _int("cka_batch", self.cka_batch, min_batch(self.estimator), MAX_INT32,
                                         f"--cka-batch (for the {self.estimator} estimator)"))
        epsilon = _float(self.epsilon, "--epsilon")
        if not -1.0 <= epsilon <= 1.0:
            raise ConfigError(f"--epsilon must lie in [-1, 1] (it is a CKA threshold), got {epsilon:g}")
        set_(self, "epsilon", epsilon)
        beta = _float(self.beta, "--beta")
        if beta <= 0:
            raise ConfigError(f"--beta must be positive, got {beta:g}")
        set_(self, "beta", beta)
        if self.max_model_bytes is not None:
            set_(self, "max_model_bytes", _int("max_model_bytes", self.max_model_bytes, 1, MAX_MODEL_BYTES_LIMIT,
                                               "--max-model-size (bytes)"))
        if self.max_memory_bytes is not None:
            set_(self, "max_memory_bytes", _int("max_memory_bytes", self.max_memory_bytes, 1,
                                                MAX_MEMORY_BYTES_LIMIT, "--max-memory (bytes)"))
        if self.threads is not None:
            set_(self, "threads", _int("threads", self.threads, 1, 1024, "--threads"))
        set_(self, "taps", self._taps(self.taps))
        if self.level == "tap" and not self.taps:
            raise ConfigError("level 'tap' means explicit taps: pass them with --tap NAME")
        set_(self, "dims", self._dims(self.dims))
        set_(self, "int_range", self._int_range(self.int_range))
        set_(self, "layouts", self._layouts(self.layouts))
        if self.inputs is not None:
            if not isinstance(self.inputs, str) or not self.inputs:
                raise ConfigError("--inputs must be the path of an .npz file")
        for option, value in (("--text", self.text), ("--tokenizer", self.tokenizer)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{option} must be a path")
        if (self.text is None) != (self.tokenizer is None):
            raise ConfigError("--text and --tokenizer go together: the text file and the folder of its tokenizer.json")
        if self.text is not None and self.inputs is not None:
            raise ConfigError("--text and --inputs both give the probe data; pass one of them")

    @staticmethod
    def _taps(taps: Any) -> tuple[str, ...]:
        if isinstance(taps, str):
            taps = (taps,)
        names = tuple(taps or ())
        for name in names:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"--tap needs a tensor name, got {name!r}")
        return tuple(dict.fromkeys(names))

    @staticmethod
    def _dims(dims: Any) -> tuple[tuple[str, int], ...]:
        # 0 is for a dimension that may be empty (a key/value cache's past length); the probe
        # refuses it anywhere else, where it knows which dimensions those are
        return _named_values(dims, "--dim", "NAME=VALUE", lambda name, value: _int("dim", value, 0, MAX_INT32,
                                                                                   f"--dim {name}"))

    @staticmethod
    def _int_range(value: Any) -> tuple[int, int] | None:
        if value is None:
            return None
        try:
            low, high = value
        except (TypeError, ValueError):
            raise ConfigError(f"--int-range needs LOW HIGH, got {value!r}") from None
        low = _int("low", low, -MAX_INT64 - 1, MAX_INT64, "--int-range LOW")
        high = _int("high", high, -MAX_INT64 - 1, MAX_INT64, "--int-range HIGH")
        if low >= high:
            raise ConfigError(f"--int-range needs LOW < HIGH, got {low} {high}")
        return (low, high)

    @staticmethod
    def _layouts(value: Any) -> tuple[tuple[str, str], ...]:
        return _named_values(value, "--layout", "NAME=tokens|channels",
                             lambda name, layout: _choice(layout, LAYOUTS, f"--layout for {name!r}"))

    # -- derived values -------------------------------------------------------------------------
    @property
    def dims_dict(self) -> dict[str, int]:
        return dict(self.dims)

    @property
    def layouts_dict(self) -> dict[str, str]:
        return dict(self.layouts)

    def with_options(self, **changes: Any) -> "ScanSpec":
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: lists for tuples, mappings for ``dims``/``layouts``."""
        data = asdict(self)
        data["taps"] = list(self.taps)
        data["dims"] = dict(self.dims)
        data["int_range"] = list(self.int_range) if self.int_range else None
        data["layouts"] = dict(self.layouts)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, ignore_unknown: bool = False) -> "ScanSpec":
        """Inverse of :meth:`to_dict`. Unknown keys are an error unless ``ignore_unknown``
        (reading a record written by a newer version)."""
        if not isinstance(data, dict):
            raise ConfigError(f"a scan spec must be a JSON object, got {type(data).__name__}")
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown and not ignore_unknown:
            raise ConfigError(f"unknown scan option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = {key: value for key, value in data.items() if key in known}
        if values.get("cka_batch") == "all":
            values["cka_batch"] = None
        for key in ("taps",):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key])
        if values.get("int_range") is not None:
            values["int_range"] = tuple(values["int_range"])
        for key in ("dims", "layouts"):
            if isinstance(values.get(key), dict):
                values[key] = tuple(values[key].items())
            elif values.get(key) is not None:
                values[key] = tuple(tuple(pair) for pair in values[key])
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"invalid scan spec: {error}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ScanSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"scan spec is not valid JSON: {error.msg}") from None
        return cls.from_dict(data)


#: The name results and history have used since the first release.
ScanConfig = ScanSpec
