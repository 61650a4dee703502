"""Language-model inputs, recognised by name and role, and generated consistently.

A causal LM export takes token ids, an attention mask, position ids and (with a cache) past
keys/values. Uniform random integers in each of them crash inside onnxruntime (a position id
of 4096 indexes past a position table) or measure a model nobody runs (a random mask). Here:

* ``input_ids`` (or an int input that indexes an embedding table): token ids drawn within the
  vocabulary, whose size is read from the embedding ``Gather``'s table in the graph;
* ``attention_mask``: ones (a real mask comes with ``--inputs``);
* ``position_ids``: ``cumsum(mask) − 1`` (1 where the mask is 0), the last ``sequence_length``
  columns — what Hugging Face computes;
* ``token_type_ids``: zeros;
* past keys/values (``past_key_values.N.key/value``, any float input named ``past…``): an empty
  past by default — the past-length dimension (e.g. ``past_sequence_length``) is 0, the normal
  first step — and the mask spans past + current tokens (``total_sequence_length``). The legacy
  GPT-2 layout (onnxruntime's own GPT-2 exporter, older transformers/optimum exports) stacks key
  and value in one input per layer, ``past_N`` of shape (2, batch, heads, past, head_dim): told
  by its rank 5 and fixed leading 2 (:mod:`redaudit.core.kv_layout`), not by the name alone.
  redaudit keeps every input samples-first, so such a past is held as (batch, 2, heads, past,
  head_dim) and its batch axis is moved back to 1 where a session is fed
  (:func:`redaudit.core.run.session_feed`).
  A past whose past length cannot be told from its shape is refused in one line
  (:func:`check_fillable`).

A layout this cannot drive (onnxruntime-genai's fused ``GroupQueryAttention``, which reads
``seqlens_k`` and ``total_sequence_length`` from graph inputs) is refused in one line naming
what is missing (:func:`check_drivable`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from redaudit.core.kv_layout import is_past
from redaudit.errors import ProbeInputError

TOKEN_IDS, MASK, POSITIONS, TOKEN_TYPES, PAST = "token_ids", "attention_mask", "position_ids", "token_type_ids", "past"
_NAMED_ROLES = {"input_ids": TOKEN_IDS, "attention_mask": MASK, "position_ids": POSITIONS,
                "token_type_ids": TOKEN_TYPES}
#: com.microsoft fused attention ops and the inputs (by position) they need as lengths.
_FUSED_LENGTH_INPUTS = {"GroupQueryAttention": {5: "seqlens_k", 6: "total_sequence_length"},
                        "PagedAttention": {}, "SparseAttention": {}}
_PASSTHROUGH = frozenset({"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten"})
@dataclass(frozen=True)
class InputRole:
    """What one graph input is to a language model: ``role`` (one of the constants above) and,
    for token ids, ``vocab`` (rows of the embedding table; None when the graph does not say)."""

    role: str
    vocab: int | None = None


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                found.setdefault(name, []).append(node)
    return found


def _table_rows(graph: onnx.GraphProto, name: str) -> int | None:
    """Rows of a constant embedding table (an initializer or a Constant node's value)."""
    for init in graph.initializer:
        if init.name == name:
            return int(init.dims[0]) if init.dims else None
    for node in graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.dims:
                    return int(attr.t.dims[0])
    return None


def embedding_rows(graph: onnx.GraphProto, name: str, consumers: Mapping[str, list[onnx.NodeProto]]) -> int | None:
    """The largest embedding table ``name`` indexes: a Gather (axis 0) whose indices come from
    ``name`` through casts and reshapes and whose data is a constant table, or the word-embedding
    table of a fused ``EmbedLayerNormalization`` that ``name`` feeds."""
    rows: list[int] = []
    frontier, seen = [name], set()
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in consumers.get(current, []):
            if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == current:
                axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 0)
                found = _table_rows(graph, node.input[0]) if axis == 0 else None
                if found:
                    rows.append(found)
            elif node.op_type == "EmbedLayerNormalization" and len(node.input) > 2 and node.input[0] == current:
                # onnxruntime's optimizer fuses the embedding Gather into this node: input 0 indexes
                # its word-embedding table, input 2
                found = _table_rows(graph, node.input[2])
                if found:
                    rows.append(found)
            elif node.op_type in _PASSTHROUGH and node.input[0] == current:
                frontier.extend(out for out in node.output if out)
    return max(rows) if rows else None


def input_roles(model: onnx.ModelProto, names: list[str]) -> dict[str, InputRole]:
    """Roles of the inputs ``names`` that a language model conventionally has. Token ids are
    ``input_ids`` — or, in a model with no such name, the only integer input named ``*ids``
    other than positions and token types, else the only one that indexes an embedding table
    (an export whose inputs kept torch's generated names). Empty when there is none."""
    graph = model.graph
    types = {value.name: value.type.tensor_type.elem_type for value in graph.input}
    ranks = {value.name: len(value.type.tensor_type.shape.dim) for value in graph.input}
    integer = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    roles: dict[str, InputRole] = {}
    for name in names:
        lowered = name.lower()
        # a (batch, sequence) mask only: a 4-D additive mask is not ones, and is left alone
        if lowered in _NAMED_ROLES and ranks.get(name) == 2 and (
                types.get(name) in integer or _NAMED_ROLES[lowered] == MASK):
            roles[name] = InputRole(_NAMED_ROLES[lowered])
        elif is_past(name, types.get(name, 0)):
            roles[name] = InputRole(PAST)
    if not any(role.role == TOKEN_IDS for role in roles.values()):
        guesses = [name for name in names if name not in roles and types.get(name) in integer
                   and name.lower().endswith("ids")]
        if len(guesses) != 1:
            consumers = _consumers(graph)
            guesses = [name for name in names if name not in roles and types.get(name) in integer
                       and embedding_rows(graph, name, consumers) is not None]
        if len(guesses) == 1:
            roles[guesses[0]] = InputRole(TOKEN_IDS)
    token = next((name for name, role in roles.items() if role.role == TOKEN_IDS), None)
    if token is None:
        return {}
    roles[token] = InputRole(TOKEN_IDS, embedding_rows(graph, token, _consumers(graph)))
    return roles


def check_drivable(model: onnx.ModelProto) -> None:
    """Refuse a model whose fused attention reads lengths from graph inputs redaudit cannot
    generate (onnxruntime-genai's GroupQueryAttention: ``seqlens_k``, ``total_sequence_length``)."""
    graph_inputs = {value.name for value in model.graph.input} - {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        if node.domain != "com.microsoft" or node.op_type not in _FUSED_LENGTH_INPUTS:
            continue
        missing = [f"{role} (input {node.input[slot]!r})"
                   for slot, role in _FUSED_LENGTH_INPUTS[node.op_type].items()
                   if slot < len(node.input) and node.input[slot] in graph_inputs]
        if missing or not _FUSED_LENGTH_INPUTS[node.op_type]:
            what = ", ".join(missing) or "its paged/sparse cache layout"
            raise ProbeInputError(
                f"cannot drive this model: its fused {node.op_type} (com.microsoft) attention needs {what}, "
                "which redaudit does not generate; export the model without fused attention (torch.onnx or "
                "optimum), or pass every input in --inputs")


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


def padding_mask(model: onnx.ModelProto) -> str | None:
    """The attention-mask input token-level pooling weights by (a language model's, 2-D), or None."""
    names = [value.name for value in model.graph.input]
    roles = input_roles(model, names)
    ranks = {value.name: len(value.type.tensor_type.shape.dim) for value in model.graph.input}
    return next((name for name, role in roles.items() if role.role == MASK and ranks.get(name) == 2), None)
