"""Top-level control flow a scan cannot see into: inline what is known, name what is hidden.

Why: tensors inside an ``If``/``Loop``/``Scan`` body cannot be tapped (onnxruntime only fetches
main-graph tensors), and the graph index, the probe's input roles (token ids bounded by the
embedding table), units and prune only read the main graph. Optimum's merged decoder
(``decoder_model_merged.onnx``, the layout of transformers.js and countless Hub LLMs) puts the
whole decoder inside one top-level ``If`` on the bool graph input ``use_cache_branch``: its
then-branch is the decoder with past, its else-branch the decoder without, reading the outer
graph's weights by name. Left as it is, no decoder layer is visible and the probe draws token ids
past the vocabulary.

:func:`inline_known_branches` runs at load (:class:`~redaudit.core.prepared.PreparedModel`) on the
weightless proto: a top-level ``If`` whose condition is a graph input of known value
(:data:`KNOWN_CONDITIONS`: ``use_cache_branch`` is True — the with-past branch, which redaudit
drives with an empty past exactly as a flat cached export) is replaced by the chosen branch's
nodes — unless that branch leaves unread a graph input the other branch reads: an
encoder-decoder's merged decoder (optimum-onnx merges T5's itself) reads its cross-attention
keys/values from ``past_key_values.N.encoder.*`` in the with-past branch and never reads
``encoder_hidden_states``, so no past makes it the first step; the without-past branch is taken
then, the note says why, and the past inputs only the dropped branch read leave the graph; the branch's own initializers move to the outer graph as they are (an external-data one
stays a reference into the model's folder); the branch's outputs take the If's output names
(or feed them through Identity); names that would clash are suffixed; the condition input
leaves the graph. Every later stage — taps, units, probe, memory estimate, session, prune —
sees one flat graph, and a pruned merged decoder is written flat (docs/prune.md).

What cannot be inlined is named by :mod:`redaudit.core.hidden_layers`.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from redaudit.core.graph import node_bodies, node_inputs
from redaudit.errors import ProbeInputError

#: Graph inputs whose value is known: optimum's merged decoder runs its with-past branch.
KNOWN_CONDITIONS: dict[str, bool] = {"use_cache_branch": True}
_BRANCH_KIND = {"use_cache_branch": {True: "with past", False: "without past"}}


@dataclass(frozen=True)
class Inlined:
    """One If replaced by a branch: the node, its condition input and the value it was given."""

    node: str
    condition: str
    value: bool
    why: str = ""  # why the branch of the known value was not the one taken

    @property
    def note(self) -> str:
        """The scan's warning line."""
        branch = "then-branch" if self.value else "else-branch"
        kind = _BRANCH_KIND.get(self.condition, {}).get(self.value)
        return (f"inlined the If {self.node!r} on input {self.condition!r} "
                f"({branch}{': ' + kind if kind else ''}){': ' + self.why if self.why else ''}")


def inline_known_branches(model: onnx.ModelProto,
                          known: Mapping[str, bool] = KNOWN_CONDITIONS) -> tuple[onnx.ModelProto, tuple[Inlined, ...]]:
    """``model`` with every top-level If on a graph input named in ``known`` replaced by the
    branch that value selects (a copy; ``model`` itself when there is none), and what was done."""
    graph = model.graph
    initializers = {tensor.name for tensor in graph.initializer}
    ordered = [value.name for value in graph.input if value.name not in initializers]
    inputs = set(ordered)
    targets = [position for position, node in enumerate(graph.node)
               if node.op_type == "If" and node.domain in ("", "ai.onnx") and node.input
               and node.input[0] in inputs and node.input[0] in known]
    if not targets:
        return model, ()
    flat = onnx.ModelProto()
    flat.CopyFrom(model)
    done: list[Inlined] = []
    read_by_ifs: set[str] = set()
    for position in reversed(targets):  # later positions first: earlier ones keep their index
        node = flat.graph.node[position]
        value, why = _branch_to_take(node, bool(known[node.input[0]]), ordered)
        read_by_ifs |= set(node_inputs(node))
        _inline(flat.graph, position, value)
        done.append(Inlined(node.name or f"If #{position}", node.input[0], value, why))
    for item in {item.condition: item for item in done}.values():
        _drop_condition(flat.graph, item.condition, item.value)
    _drop_unread_inputs(flat.graph, read_by_ifs - set(known))
    return flat, tuple(reversed(done))


def _branch_to_take(node: onnx.NodeProto, value: bool, inputs: list[str]) -> tuple[bool, str]:
    """The branch ``value`` selects, unless it leaves unread a graph input the other branch
    reads: then the other one, and why. An encoder-decoder's merged decoder (optimum's T5) is
    such a case: its with-past branch reads the cross-attention keys/values from the past instead
    of ``encoder_hidden_states``, so no past the probe can give makes it the first step, which
    the without-past branch computes."""
    branches = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
    taken, other = (branches["then_branch"], branches["else_branch"]) if value else \
        (branches["else_branch"], branches["then_branch"])
    unread = [name for name in inputs if name != node.input[0]
              and name in _graph_reads(other) - _graph_reads(taken)]
    if not unread:
        return value, ""
    kind = _BRANCH_KIND.get(node.input[0], {}).get(value)
    label = f"the {kind.replace(' ', '-')} branch" if kind else f"the {'then' if value else 'else'}-branch"
    return not value, f"{label} does not read {', '.join(repr(name) for name in unread)}"


def _graph_reads(body: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for inner in body.node:
        names |= set(node_inputs(inner))
    names |= {value.name for value in body.output}
    return names


def _drop_unread_inputs(graph: onnx.GraphProto, candidates: set[str]) -> None:
    """Graph inputs that only the dropped branch read (an encoder-decoder's past, when its
    without-past branch was taken) leave the graph: nothing would feed them a meaning."""
    read = {name for node in graph.node for name in node_inputs(node)} | {value.name for value in graph.output}
    keep = [value for value in graph.input if value.name in read or value.name not in candidates]
    if len(keep) != len(graph.input):
        del graph.input[:]
        graph.input.extend(keep)


def _inline(graph: onnx.GraphProto, position: int, value: bool) -> None:
    node = graph.node[position]
    attribute = "then_branch" if value else "else_branch"
    branch = copy.deepcopy(next(a.g for a in node.attribute if a.name == attribute))
    # an If output name is free for the branch only where the branch outputs that very name in
    # that position; any other branch tensor of that name is renamed (outputs swapped: SSA)
    taken = _outer_names(graph) - {outer for outer, inner in zip(node.output, branch.output) if outer == inner.name}
    rename: dict[str, str] = {}
    local = [name for inner in branch.node for name in inner.output if name]
    local += [tensor.name for tensor in branch.initializer]
    local += [tensor.values.name for tensor in branch.sparse_initializer]
    for name in local:  # the branch's own names: kept unless they clash with an outer one
        if name in taken:
            rename[name] = _fresh(name, taken)
        taken.add(rename.get(name, name))
    outputs = list(node.output)
    producers = {name for inner in branch.node for name in inner.output if name}
    branch_outputs = [rename.get(value.name, value.name) for value in branch.output]
    tail: list[onnx.NodeProto] = []
    for outer, inner in zip(outputs, branch_outputs):
        if not outer:
            continue
        if inner == outer:
            continue
        if inner in producers and branch_outputs.count(inner) == 1 and inner not in graph.output \
                and outer not in taken:  # the branch's tensor takes the If's output name
            rename[_original(rename, inner)] = outer
        else:  # an outer name, a branch initializer, or one tensor for two outputs
            tail.append(helper.make_node("Identity", [inner], [outer], name=_fresh(f"{outer}/inlined", taken)))
    node_names = {inner.name for inner in graph.node if inner.name}
    nodes = []
    for inner in branch.node:
        _rename_node(inner, rename)
        if inner.name and inner.name in node_names:
            inner.name = _fresh(inner.name, node_names)
        node_names.add(inner.name)
        nodes.append(inner)
    for tensor in branch.initializer:
        tensor.name = rename.get(tensor.name, tensor.name)
        graph.initializer.append(tensor)
    for sparse in branch.sparse_initializer:
        sparse.values.name = rename.get(sparse.values.name, sparse.values.name)
        graph.sparse_initializer.append(sparse)
    typed = {value.name for value in [*graph.input, *graph.output, *graph.value_info]}
    for info in branch.value_info:
        info.name = rename.get(info.name, info.name)
        if info.name not in typed:
            graph.value_info.append(info)
    kept = [inner for inner in graph.node]
    del graph.node[:]
    graph.node.extend([*kept[:position], *nodes, *tail, *kept[position + 1:]])


def _original(rename: dict[str, str], name: str) -> str:
    """The branch's own name of ``name`` (a clash may have renamed it already)."""
    return next((old for old, new in rename.items() if new == name), name)


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    names = {value.name for value in [*graph.input, *graph.output, *graph.value_info]}
    names |= {tensor.name for tensor in graph.initializer}
    names |= {name for node in graph.node for name in [*node.input, *node.output] if name}
    return names


def _fresh(name: str, taken: set[str]) -> str:
    suffix = 1
    while f"{name}__{suffix}" in taken:
        suffix += 1
    return f"{name}__{suffix}"


def _rename_node(node: onnx.NodeProto, rename: Mapping[str, str]) -> None:
    """Rename ``node``'s inputs and outputs, and what its own subgraphs capture from outside."""
    if not rename:
        return
    node.input[:] = [rename.get(name, name) for name in node.input]
    node.output[:] = [rename.get(name, name) for name in node.output]
    for body in node_bodies(node):
        shadowed = {value.name for value in body.input} | {tensor.name for tensor in body.initializer}
        shadowed |= {name for inner in body.node for name in inner.output}
        captured = {old: new for old, new in rename.items() if old not in shadowed}
        for inner in body.node:
            _rename_node(inner, captured)
        for value in body.output:
            value.name = captured.get(value.name, value.name)


def _drop_condition(graph: onnx.GraphProto, name: str, value: bool) -> None:
    """The condition leaves the graph's inputs; a remaining reader gets it as a Constant."""
    keep = [item for item in graph.input if item.name != name]
    declared = next(item for item in graph.input if item.name == name)
    del graph.input[:]
    graph.input.extend(keep)
    if any(name in node_inputs(node) for node in graph.node) or name in {o.name for o in graph.output}:
        dims = [d.dim_value or 1 for d in declared.type.tensor_type.shape.dim]
        constant = helper.make_tensor(name, onnx.TensorProto.BOOL, dims, [value] * int(np.prod(dims or [1])))
        graph.node.insert(0, helper.make_node("Constant", [], [name], value=constant,
                                              name=_fresh(f"{name}/constant", {n.name for n in graph.node})))




def check_condition_inputs(inlined: tuple[Inlined, ...], source: Any) -> Any:
    """Probe inputs that name an inlined condition (``use_cache_branch`` in ``--inputs``) are
    honoured when every value is the one inlined, and the member is dropped (an in-memory
    mapping) or left for the probe to ignore (a file); any other value is refused in one line:
    redaudit runs one branch (a decoder-only merge: the with-past one, which an empty past makes
    the decoder without past; an encoder-decoder's: the without-past one)."""
    if not inlined or source is None:
        return source
    names = [item.condition for item in inlined]
    if isinstance(source, Mapping):
        arrays = {name: source[name] for name in names if name in source}
    else:
        from redaudit.core.npz import read_npz

        arrays = read_npz(source, names).arrays  # only these members are read
    for item in inlined:
        if item.condition not in arrays:
            continue
        values = np.asarray(arrays[item.condition])
        if values.size == 0 or values.dtype.kind not in "biuf" or not np.all(values.astype(bool) == item.value):
            raise ProbeInputError(
                f"input {item.condition!r} must be {item.value} in every sample: redaudit runs the If "
                f"{item.node!r} as its {'then' if item.value else 'else'}-branch only (inlined at load); "
                f"drop {item.condition!r} from the inputs")
    if isinstance(source, Mapping):
        return {name: array for name, array in source.items() if name not in names}
    return source
