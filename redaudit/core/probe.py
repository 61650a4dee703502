"""Probe inputs: real arrays from an ``.npz`` (or a dict), or synthetic ones from input specs.

Synthetic inputs are generated batch by batch from one seeded generator, so memory does not
grow with the number of samples and the same seed gives the same inputs. The report always
says which kind was used: the paper uses real test data, and synthetic probes are a fallback.
A language model's inputs (token ids, mask, positions, past keys/values) are recognised and
generated consistently, and completed when real data holds only token ids
(:mod:`redaudit.core.lm_inputs`, :mod:`redaudit.core.lm_values`).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from redaudit.core import lm_inputs as lm
from redaudit.core import lm_values
from redaudit.core.kv_layout import ambiguous_layout_warning, batch_axis, graph_layout_refusal, swap_samples
from redaudit.core.npz import read_npz
from redaudit.core.probe_fingerprint import InputHasher
from redaudit.errors import ProbeInputError

DEFAULT_SYMBOLIC_DIM = 16
DEFAULT_INT_RANGE = (0, 256)


@dataclass(frozen=True)
class InputSpec:
    """A graph input. ``role`` is what it is to a language model (token ids, mask, positions,
    token types, past; "" otherwise) and ``vocab`` the embedding rows token ids index.

    ``shape`` is samples-first, as every probe array is: a legacy stacked past, declared
    (2, batch, heads, past, head_dim), is (batch, 2, heads, past, head_dim) here, and
    ``batch_axis`` (1) says where the graph wants the samples back
    (:func:`redaudit.core.run.session_feed` moves them)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]  # shape[0] is the batch axis
    role: str = ""
    vocab: int | None = None
    batch_axis: int = 0  # the graph's batch axis

    @property
    def graph_shape(self) -> tuple[int | str | None, ...]:
        """The shape as the graph declares it: the samples back on ``batch_axis``."""
        return tuple(swap_samples(self.shape, self.batch_axis))

    @property
    def fixed_batch(self) -> int | None:
        first = self.shape[0] if self.shape else None
        return first if isinstance(first, int) and first > 0 else None


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    lm.check_drivable(model)  # a fused-attention layout is refused before its scalar inputs are
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise ProbeInputError(f"input {value.name!r} is not a tensor (sequence/map inputs are not supported)")
        dims: list[int | str | None] = []
        for dim in tensor_type.shape.dim:
            dims.append(int(dim.dim_value) if dim.HasField("dim_value")
                        else dim.dim_param if dim.HasField("dim_param") else None)
        if not dims:
            raise ProbeInputError(f"input {value.name!r} is a scalar; redaudit needs a batch axis on every input")
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        except (KeyError, TypeError, ValueError):  # found by fuzzing: an element type onnx does not know
            raise ProbeInputError(f"input {value.name!r} has element type {tensor_type.elem_type}, which is not an "
                                  "ONNX tensor type redaudit can feed; re-export the model") from None
        axis = batch_axis(value)
        specs.append(InputSpec(value.name, dtype, tuple(swap_samples(dims, axis)), batch_axis=axis))
    roles = lm.input_roles(model, [spec.name for spec in specs])
    return [InputSpec(spec.name, spec.dtype, spec.shape, roles[spec.name].role, roles[spec.name].vocab,
                      spec.batch_axis) if spec.name in roles else spec for spec in specs]


@dataclass
class Probe:
    """Where probe batches come from. Iterate :meth:`batches`; ``digest`` is final afterwards."""

    specs: list[InputSpec]
    real: bool
    samples: int
    arrays: dict[str, np.ndarray] | None = None
    seed: int = 0
    dims: dict[str, int] = field(default_factory=dict)
    int_range: tuple[int, int] = DEFAULT_INT_RANGE
    warnings: list[str] = field(default_factory=list)
    token_range: tuple[int, int] | None = None  # token ids' range (the vocabulary) for a language model
    _hash: InputHasher = field(default_factory=InputHasher, repr=False)

    @property
    def digest(self) -> str:
        """Fingerprint of the samples yielded so far (waits for the hashing threads)."""
        return self._hash.hexdigest()

    def _synthetic(self, spec: InputSpec, count: int, rng: np.random.Generator) -> np.ndarray:
        shape = [count] + [self._dim(spec, axis, dim) for axis, dim in enumerate(spec.shape[1:], start=1)]
        if spec.role:
            array = lm_values.synthesize(spec, shape, rng, self.token_range or self.int_range)
            if array is not None:
                return array
        if spec.dtype.kind == "f":
            return rng.standard_normal(shape).astype(spec.dtype)
        if spec.dtype.kind in "iu":
            low, high = self.int_range
            return rng.integers(low, high, size=shape).astype(spec.dtype)
        if spec.dtype.kind == "b":
            return rng.integers(0, 2, size=shape).astype(bool)
        raise ProbeInputError(f"cannot synthesise input {spec.name!r} of dtype {spec.dtype}; pass real data with --inputs")

    def _dim(self, spec: InputSpec, axis: int, dim: int | str | None = None) -> int:
        dim = spec.shape[axis] if dim is None else dim
        if isinstance(dim, int) and dim > 0:
            return dim
        key = dim if isinstance(dim, str) else f"{spec.name}:{axis}"
        if key in self.dims:
            return self.dims[key]
        self.dims[key] = DEFAULT_SYMBOLIC_DIM
        self.warnings.append(f"dimension {key!r} of input {spec.name!r} is symbolic; using "
                             f"{DEFAULT_SYMBOLIC_DIM} (set it with --dim {key}=VALUE)")
        return DEFAULT_SYMBOLIC_DIM

    def batches(self, chunk: int, total: int) -> Iterator[dict[str, np.ndarray]]:
        """Yield the first ``total`` samples in chunks of ``chunk`` (the last one may be smaller)."""
        rng = np.random.default_rng(self.seed)
        for start in range(0, min(total, self.samples), chunk):
            stop = min(start + chunk, total, self.samples)
            if self.arrays is not None:
                batch = {name: array[start:stop] for name, array in self.arrays.items()}
            else:
                batch = {spec.name: self._synthetic(spec, stop - start, rng) for spec in self.specs}
                lm_values.fill_positions(self.specs, batch)
            for spec in self.specs:
                array = np.ascontiguousarray(batch[spec.name])
                batch[spec.name] = array
                self._hash.update(spec.name, array)
            yield batch


def _read_npz(path: str | os.PathLike[str], specs: list[InputSpec],
              samples: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The model inputs' arrays (first ``samples`` rows) from an untrusted .npz, and how many
    samples each holds in the file: see :mod:`redaudit.core.npz` for what is checked before
    anything is decompressed. Extra arrays are kept as empty placeholders so that the caller
    can name them, never read."""
    contents = read_npz(path, [spec.name for spec in specs], rows=samples)
    for spec in specs:  # a stacked past in the graph's layout makes the samples disagree: say why
        if spec.batch_axis and spec.name in contents.arrays:
            shape = (contents.declared_samples[spec.name], *contents.arrays[spec.name].shape[1:])
            if (refusal := graph_layout_refusal(spec.name, shape)) is not None:
                raise ProbeInputError(refusal)
    lengths = sorted(set(contents.declared_samples.values()))
    if len(lengths) > 1:
        raise ProbeInputError(f"arrays disagree on the number of samples (first axis): {lengths}")
    arrays: dict[str, np.ndarray] = dict(contents.arrays)
    for name in contents.names:
        arrays.setdefault(name, _UNREAD)
    return arrays, dict(contents.declared_samples)


_UNREAD = np.empty((0,), np.uint8)


def _validate_arrays(specs: list[InputSpec], arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [spec.name for spec in specs if spec.name not in arrays]
    if missing:
        raise ProbeInputError(f"inputs file lacks array(s) for model input(s) {', '.join(missing)}; "
                              f"it has {', '.join(sorted(arrays)) or 'none'}")
    checked: dict[str, np.ndarray] = {}
    counts = set()
    for spec in specs:
        array = np.asarray(arrays[spec.name])
        if array.ndim != len(spec.shape):
            raise ProbeInputError(f"input {spec.name!r} needs {len(spec.shape)} axes (samples first), "
                                  f"got array of shape {array.shape}")
        if spec.batch_axis and (refusal := graph_layout_refusal(spec.name, array.shape)) is not None:
            raise ProbeInputError(refusal)
        for axis, dim in enumerate(spec.shape[1:], start=1):
            if isinstance(dim, int) and dim > 0 and array.shape[axis] != dim:
                raise ProbeInputError(f"input {spec.name!r} axis {axis} must be {dim}, got array of shape {array.shape}")
        if spec.dtype.kind in "iub" and array.dtype.kind == "f":
            raise ProbeInputError(f"input {spec.name!r} is {spec.dtype} but the array holds floats ({array.dtype})")
        if spec.dtype.kind == "f" and array.dtype.kind not in "fiu":
            raise ProbeInputError(f"input {spec.name!r} is {spec.dtype} but the array is {array.dtype}")
        if array.dtype.kind in "fc" and array.size and not np.isfinite(array).all():
            raise ProbeInputError(f"input {spec.name!r} holds NaN or infinite values; every layer would be NaN, "
                                  "pass finite inputs")
        checked[spec.name] = array.astype(spec.dtype, copy=False)
        counts.add(array.shape[0])
    if len(counts) != 1:
        raise ProbeInputError(f"arrays disagree on the number of samples (first axis): {sorted(counts)}")
    return checked


def _ambiguous_pasts(specs: list[InputSpec], checked: Mapping[str, np.ndarray],
                    declared: Mapping[str, int]) -> list[str]:
    """A warning for stacked pasts of 2 samples (``declared``: the samples each holds in its
    file), which read differently in the graph's layout: (2, 2, …) fits both, and nothing sound
    tells them apart — the keys and values of a past are any floats, and the present the model
    returns repeats either reading. Read samples first, as documented; said, never silent."""
    names, shape = [], ()
    for spec in specs:
        array = checked.get(spec.name)
        if not spec.batch_axis or array is None or declared.get(spec.name, array.shape[0]) != 2 or not array.size:
            continue
        if array.shape[0] == 2 and np.array_equal(array, np.swapaxes(array, 0, 1)):
            continue  # a swap that is itself (zeros, ones): both readings are the same
        names.append(spec.name)
        shape = shape or (2, *array.shape[1:])
    return [ambiguous_layout_warning(names, shape)] if names else []


def symbolic_dims(specs: list[InputSpec]) -> list[str]:
    """Names ``--dim`` accepts: every symbolic non-batch axis of the inputs (a ``dim_param``, or
    ``input:axis`` for an axis without a name), in input order."""
    names: list[str] = []
    for spec in specs:
        for axis, dim in enumerate(spec.shape[1:], start=1):
            if not (isinstance(dim, int) and dim > 0):
                key = dim if isinstance(dim, str) else f"{spec.name}:{axis}"
                if key not in names:
                    names.append(key)
    return names


def check_dim_names(specs: list[InputSpec], dims: Mapping[str, int] | None) -> None:
    """Refuse ``--dim`` names the model does not have: a typo would otherwise be ignored and
    the default size used without a word."""
    known = symbolic_dims(specs)
    batch_names = {spec.shape[0] for spec in specs if spec.shape and isinstance(spec.shape[0], str)}
    for name in dims or {}:
        if name in known:
            continue
        if name in batch_names:
            raise ProbeInputError(f"--dim {name}: {name!r} is the batch axis; the batch size is set with "
                                  "--cka-batch")
        listing = ", ".join(known) if known else "none (every non-batch axis is fixed)"
        raise ProbeInputError(f"--dim {name}: the model has no symbolic dimension {name!r}; its symbolic "
                              f"dimensions are: {listing}")


def make_probe(specs: list[InputSpec], inputs: str | os.PathLike[str] | Mapping[str, np.ndarray] | None,
               samples: int, seed: int = 0, dims: Mapping[str, int] | None = None,
               int_range: tuple[int, int] | None = None) -> Probe:
    """Build the probe source. With real inputs, ``samples`` is capped at what the data holds."""
    if samples < 1:
        raise ProbeInputError("--samples must be at least 1")
    if int_range is not None and int_range[0] >= int_range[1]:
        raise ProbeInputError(f"--int-range {int_range[0]} {int_range[1]} is empty; the upper bound is exclusive")
    check_dim_names(specs, dims)
    if inputs is None:
        probe = Probe(specs, real=False, samples=samples, seed=seed, dims=dict(dims or {}),
                      int_range=int_range or DEFAULT_INT_RANGE, token_range=lm_values.token_range(specs, int_range))
        lm_values.resolve_dims(specs, probe.dims, probe._dim)  # an empty past, a mask over past + current tokens
        for spec in specs:  # resolve symbolic dimensions now, so warnings come before the run
            for axis, dim in enumerate(spec.shape[1:], start=1):
                probe._dim(spec, axis, dim)
        if int_range is None and any(spec.dtype.kind in "iu" and (not spec.role or spec.role == lm.TOKEN_IDS
                                                                  and spec.vocab is None) for spec in specs):
            probe.warnings.append(f"integer inputs filled with uniform integers in [{DEFAULT_INT_RANGE[0]}, "
                                  f"{DEFAULT_INT_RANGE[1]}); set --int-range LOW HIGH for this model")
        return probe
    from_file = isinstance(inputs, (str, os.PathLike))
    arrays, declared = _read_npz(inputs, specs, samples) if from_file else (dict(inputs), {})
    arrays = lm_values.complete_arrays(specs, arrays)  # token ids alone: mask, positions, empty past added
    checked = _validate_arrays(specs, arrays)  # looks only at the model inputs' arrays
    available = next(iter(checked.values())).shape[0]
    if available == 0:
        raise ProbeInputError("the inputs hold 0 samples (first axis is empty); pass at least one sample")
    warnings = _ambiguous_pasts(specs, checked, declared)
    extra = sorted(set(arrays) - {spec.name for spec in specs})
    if extra:
        warnings.append(f"ignored arrays that match no model input: {', '.join(extra)}")
    if available < samples:
        warnings.append(f"inputs hold {available} samples, fewer than --samples {samples}; using {available}")
    return Probe(specs, real=True, samples=min(samples, available), arrays=checked, seed=seed,
                 warnings=warnings)
