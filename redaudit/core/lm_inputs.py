"""Language-model inputs, recognised by name and role.

A causal LM export takes token ids, an attention mask, position ids and (with a cache) past
keys/values. Uniform random integers in each of them crash inside onnxruntime (a position id
of 4096 indexes past a position table) or measure a model nobody runs (a random mask), so the
probe must know which input is which. Here each graph input gets its role:

* ``input_ids`` (or an int input that indexes an embedding table): token ids, with the
  vocabulary, whose size is read from the embedding ``Gather``'s table in the graph;
* ``attention_mask``, ``position_ids``, ``token_type_ids``: by name, (batch, sequence) only;
* past keys/values (``past_key_values.N.key/value``, any float input named ``past…``). The legacy
  GPT-2 layout (onnxruntime's own GPT-2 exporter, older transformers/optimum exports) stacks key
  and value in one input per layer, ``past_N`` of shape (2, batch, heads, past, head_dim): told
  by its rank 5 and fixed leading 2 (:mod:`redaudit.core.kv_layout`), not by the name alone.

What each role is filled with — and how real token ids are completed — is
:mod:`redaudit.core.lm_values`' job: this module reads the graph, that one makes arrays.

A layout this cannot drive (onnxruntime-genai's fused ``GroupQueryAttention``, which reads
``seqlens_k`` and ``total_sequence_length`` from graph inputs) is refused in one line naming
what is missing (:func:`check_drivable`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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


def padding_mask(model: onnx.ModelProto) -> str | None:
    """The attention-mask input token-level pooling weights by (a language model's, 2-D), or None."""
    names = [value.name for value in model.graph.input]
    roles = input_roles(model, names)
    ranks = {value.name: len(value.type.tensor_type.shape.dim) for value in model.graph.input}
    return next((name for name, role in roles.items() if role.role == MASK and ranks.get(name) == 2), None)
