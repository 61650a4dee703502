"""Values for a language model's inputs, consistent with each other: synthetic batches, and real
token ids completed with the inputs they imply.

The roles come from :mod:`redaudit.core.lm_inputs` (which reads the graph); this module makes
the arrays, so that a probe measures the model as it is run:

* token ids: drawn within the vocabulary (the embedding table's rows), or ``--int-range``
  within it (:func:`token_range`);
* ``attention_mask``: ones (a real mask comes with ``--inputs``);
* ``position_ids``: ``cumsum(mask) − 1`` (1 where the mask is 0), the last ``sequence_length``
  columns — what Hugging Face computes (:func:`fill_positions`);
* ``token_type_ids``: zeros;
* past keys/values: an empty past by default — the past-length dimension (e.g.
  ``past_sequence_length``) is 0, the normal first step — and the mask spans past + current
  tokens (``total_sequence_length``) (:func:`resolve_dims`). redaudit keeps every input
  samples-first, so a legacy stacked past is held as (batch, 2, heads, past, head_dim) and its
  batch axis is moved back to 1 where a session is fed (:func:`redaudit.core.run.session_feed`).
  A past whose past length cannot be told from its shape is refused in one line
  (:func:`check_fillable`).

Real data that holds only token ids (and maybe a mask) is completed the same way
(:func:`complete_arrays`). Specs are typed loosely (``list``): the probe's ``InputSpec`` lives in
:mod:`redaudit.core.probe`, which imports this module.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from redaudit.core.lm_inputs import MASK, PAST, POSITIONS, TOKEN_IDS, TOKEN_TYPES, InputRole
from redaudit.errors import ProbeInputError


def past_length_keys(specs: list, roles: Mapping[str, InputRole]) -> set[str]:
    """Dimension keys of the past length: symbolic axes of past inputs that no other input has."""
    def keys(spec) -> set[str]:
        return {dim if isinstance(dim, str) else f"{spec.name}:{axis}"
                for axis, dim in enumerate(spec.shape[1:], start=1) if not (isinstance(dim, int) and dim > 0)}

    past = set().union(*(keys(spec) for spec in specs if roles.get(spec.name, InputRole("")).role == PAST))
    others = set().union(*(keys(spec) for spec in specs if roles.get(spec.name, InputRole("")).role != PAST))
    return past - others


def check_fillable(spec, past_keys: set[str]) -> None:
    """Refuse a past input whose past length redaudit cannot tell from its shape: more than one
    axis (besides the batch) that only past inputs have. Filling both with 0 would make an input
    onnxruntime rejects or, worse, one it runs with a wrong meaning (a 5-D past without the fixed
    leading 2 has its batch among those axes)."""
    keys = [_key(spec, axis) for axis in range(1, len(spec.shape)) if _key(spec, axis) in past_keys]
    if len(keys) > 1:
        raise ProbeInputError(
            f"cannot fill the cache input {spec.name!r} of shape {spec.graph_shape}: redaudit fills a past of "
            "(batch, heads, past length, head_dim) or the stacked (2, batch, heads, past length, head_dim), and "
            f"cannot tell which of {', '.join(map(repr, keys))} is the past length; pass every cache input in "
            "--inputs (samples first)")


def positions_from_mask(mask: np.ndarray, length: int) -> np.ndarray:
    """Hugging Face's position ids: ``cumsum(mask) − 1``, 1 where the mask is 0, last ``length`` columns."""
    positions = np.cumsum(mask.astype(np.int64), axis=1) - 1
    positions[mask == 0] = 1
    return positions[:, -length:] if length else positions[:, :0]


def _key(spec, axis: int) -> str | None:
    """The ``--dim`` key of a symbolic axis (None for a fixed one)."""
    dim = spec.shape[axis]
    if isinstance(dim, int) and dim > 0:
        return None
    return dim if isinstance(dim, str) else f"{spec.name}:{axis}"


def _by_role(specs: list) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for spec in specs:
        if spec.role and spec.role != PAST:
            found.setdefault(spec.role, spec)
    return found


def resolve_dims(specs: list, dims: dict[str, int], size_of: Callable[[Any, int], int]) -> None:
    """Fill ``dims`` for a language model's inputs, in place: past lengths 0 (an empty cache)
    unless given; the mask's own length key (``total_sequence_length``) past + sequence. A 0
    is accepted only for a past length. ``size_of(spec, axis)`` resolves any other axis (with
    the usual default and warning)."""
    roles = {spec.name: InputRole(spec.role) for spec in specs if spec.role}
    past_keys = past_length_keys(specs, roles) if roles else set()
    for key, value in dims.items():
        if value == 0 and key not in past_keys:
            raise ProbeInputError(f"--dim {key}=0: only a cache (past) length may be empty"
                                  + (f"; this model's past lengths are {', '.join(sorted(past_keys))}"
                                     if past_keys else "; this model has no key/value cache inputs"))
    for spec in specs:
        if spec.role == PAST:
            check_fillable(spec, past_keys)
    for key in past_keys:
        dims.setdefault(key, 0)
    named = _by_role(specs)
    token, mask = named.get(TOKEN_IDS), named.get(MASK)
    if token is None or mask is None or len(token.shape) != 2 or len(mask.shape) != 2:
        return
    token_key, mask_key = _key(token, 1), _key(mask, 1)
    if mask_key is None or mask_key == token_key:
        return
    past = max((dims.get(_key(spec, axis) or "", 0) for spec in specs if spec.role == PAST
                for axis in range(1, len(spec.shape)) if _key(spec, axis) in past_keys), default=0)
    expected = size_of(token, 1) + past
    if dims.get(mask_key, expected) != expected:
        raise ProbeInputError(f"--dim {mask_key}={dims[mask_key]} disagrees with the other lengths: "
                              f"{mask.name!r} spans the past and current tokens, {past} + {size_of(token, 1)} = "
                              f"{expected}; leave it out and it is derived")
    dims[mask_key] = expected


def token_range(specs: list, int_range: tuple[int, int] | None) -> tuple[int, int] | None:
    """The range token ids are drawn from: the vocabulary, or ``int_range`` within it."""
    token = _by_role(specs).get(TOKEN_IDS)
    if token is None or token.vocab is None:
        return int_range
    if int_range is None:
        return (0, token.vocab)
    if int_range[0] < 0 or int_range[1] > token.vocab:
        raise ProbeInputError(f"--int-range {int_range[0]} {int_range[1]} leaves the vocabulary: {token.name!r} "
                              f"indexes an embedding table of {token.vocab} rows, so token ids lie in [0, {token.vocab})")
    return int_range


def synthesize(spec, shape: list[int], rng: np.random.Generator, ids_range: tuple[int, int]) -> np.ndarray | None:
    """A language-model input of ``shape`` by its role (None: not one; positions are filled by
    :func:`fill_positions` once the mask exists)."""
    if spec.role == TOKEN_IDS:
        return rng.integers(ids_range[0], ids_range[1], size=shape).astype(spec.dtype)
    if spec.role == MASK:
        return np.ones(shape, spec.dtype)
    if spec.role in (TOKEN_TYPES, PAST, POSITIONS):
        return np.zeros(shape, spec.dtype)
    return None


def fill_positions(specs: list, batch: dict[str, np.ndarray]) -> None:
    """Position ids consistent with the batch's mask (in place): Hugging Face's rule; without a
    mask, 0 … T−1 after the past."""
    named = _by_role(specs)
    positions, mask = named.get(POSITIONS), named.get(MASK)
    if positions is None or positions.name not in batch or len(positions.shape) != 2:
        return
    count, length = batch[positions.name].shape
    if mask is not None and mask.name in batch and batch[mask.name].ndim == 2:
        values = positions_from_mask(batch[mask.name], length)
    else:
        values = np.tile(np.arange(length), (count, 1))
    batch[positions.name] = values.astype(positions.dtype)


def complete_arrays(specs: list, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Real data that holds token ids (and maybe a mask) completed with the other inputs of a
    language model: a mask of ones, positions from the mask, zero token types, an empty past.
    Arrays already given are kept; token ids outside the vocabulary are refused."""
    completed = dict(arrays)
    named = _by_role(specs)
    token = named.get(TOKEN_IDS)
    if token is None or token.name not in completed or np.asarray(completed[token.name]).ndim != 2:
        return completed
    ids = np.asarray(completed[token.name])
    if token.vocab is not None and ids.size and ids.dtype.kind in "iu" and (ids.min() < 0 or ids.max() >= token.vocab):
        bad = int(ids.max()) if ids.max() >= token.vocab else int(ids.min())
        raise ProbeInputError(f"input {token.name!r} holds token id {bad}, outside the model's vocabulary: its "
                              f"embedding table has {token.vocab} rows; tokenize with the model's own tokenizer")
    count, length = ids.shape
    past_length = 0
    past_keys = past_length_keys(specs, {spec.name: InputRole(spec.role) for spec in specs if spec.role})
    for spec in specs:
        if spec.role == PAST and spec.name not in completed:
            check_fillable(spec, past_keys)
            shape = [count] + [0 if _key(spec, axis) else spec.shape[axis] for axis in range(1, len(spec.shape))]
            if sum(1 for axis in range(1, len(spec.shape)) if _key(spec, axis)) == 1:
                completed[spec.name] = np.zeros(shape, spec.dtype)
        elif spec.role == PAST and np.asarray(completed[spec.name]).ndim >= 3:
            past_length = np.asarray(completed[spec.name]).shape[-2]
    mask = named.get(MASK)
    if mask is not None and mask.name not in completed:
        completed[mask.name] = np.ones((count, past_length + length), mask.dtype)
    types = named.get(TOKEN_TYPES)
    if types is not None and types.name not in completed:
        completed[types.name] = np.zeros((count, length), types.dtype)
    positions = named.get(POSITIONS)
    if positions is not None and positions.name not in completed:
        completed[positions.name] = np.zeros((count, length), positions.dtype)
        fill_positions(specs, completed)
    return completed
