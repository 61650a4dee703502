"""KV-cache inputs and outputs of a decoder export, kept consistent when layers are removed.

A causal LM exported with a cache (the optimum-onnx layout) has, per layer N, inputs
``past_key_values.N.key`` / ``.value`` and outputs ``present.N.key`` / ``.value`` (the past
concatenated with this step's keys and values). A removed layer has no keys or values, so its
present outputs and past inputs must go with it; otherwise the dead layer's key/value projections
stay alive just to fill an output nobody should read, and a generation loop would feed a cache
to a layer that no longer exists.

What happens, in order (:func:`drop_orphaned_outputs` during surgery, :func:`tidy_inputs` after):

1. A ``present.*`` output that fed the model's other outputs (the logits) before the surgery and
   does not any more belonged to a removed layer: it leaves the graph outputs, and the nodes that
   only computed it die with the layer.
2. The removed layer's ``past_key_values.*`` inputs leave the graph inputs. Exports read the
   past length off one layer's past (transformers: layer 0's keys, ``Shape`` → cache position
   and causal mask); when that layer is removed, those shape-only reads move to the same input
   of the first kept layer — every layer's past has the same symbolic shape, checked.
3. The kept layers are **renumbered** 0..L'−1 in their old order (``past_key_values.3.key`` of a
   model without layer 2 becomes ``past_key_values.2.key``, ``present.3.key`` → ``present.2.key``):
   runtimes that drive such exports (optimum's ORTModelForCausalLM, generation loops written
   against the layout) build these names from ``range(num_layers)``. The old → new names are
   returned so that callers can report them.

The legacy GPT-2 layout (onnxruntime's own GPT-2 exporter, older transformers/optimum exports)
has one input ``past_N`` and one output ``present_N`` per layer, key and value stacked on axis 0
— (2, batch, heads, past, head_dim). Its present is stacked after the attention from the
layer's concatenated keys and values, so it feeds the logits only *through* them: a present
counts as live while what it stacks is (:func:`feeding_cache_outputs`). The past length is read
off ``past_0`` through a ``Gather`` of its key, which step 2 follows like a copy. Renumbering
gives ``past_2`` → ``past_1`` alike.
"""
from __future__ import annotations

import re

import onnx

from redaudit.core.graph import node_inputs
from redaudit.core.kv_layout import STACKING_OPS
from redaudit.prune.errors import PruneError

#: Per layer N: ``past_key_values.N.key`` (groups 1, 2), an encoder-decoder's
#: ``past_key_values.N.decoder.key`` / ``.encoder.key`` (self- and cross-attention; group 2 is
#: then ``decoder.key``...), or the legacy stacked ``past_N`` (group 3).
PAST = re.compile(r"^(?:past_key_values|past)\.(\d+)\.((?:decoder\.|encoder\.)?(?:key|value))$|^past_(\d+)$")
PRESENT = re.compile(r"^present\.(\d+)\.((?:decoder\.|encoder\.)?(?:key|value))$|^present_(\d+)$")


def cache_layer(pattern: re.Pattern[str], name: str) -> tuple[int, str] | None:
    """(layer, "key"/"value" — "decoder.key"... in an encoder-decoder's decoder — or "" for a
    stacked past/present) of a cache name, or None."""
    match = pattern.match(name)
    if match is None:
        return None
    return (int(match.group(1)), match.group(2)) if match.group(1) is not None else (int(match.group(3)), "")


def _renumbered(name: str, layer: int) -> str:
    """``past_key_values.3.key`` → ``past_key_values.{layer}.key``, ``present_3`` → ``present_{layer}``."""
    return re.sub(r"(?<=[._])\d+(?=\.|$)", str(layer), name, count=1)


def is_cache_output(name: str) -> bool:
    return PRESENT.match(name) is not None


def _producers(graph: onnx.GraphProto) -> dict[str, int]:
    return {name: position for position, node in enumerate(graph.node) for name in node.output if name}


def _ancestors(graph: onnx.GraphProto, names: list[str]) -> set[int]:
    producer = _producers(graph)
    seen: set[int] = set()
    stack = list(names)
    while stack:
        position = producer.get(stack.pop())
        if position is None or position in seen:
            continue
        seen.add(position)
        stack.extend(name for name in node_inputs(graph.node[position]) if name)
    return seen


def feeding_cache_outputs(graph: onnx.GraphProto) -> set[str]:
    """Cache outputs whose producer also feeds a non-cache output (a live layer's present), or
    stacks or copies tensors whose producers do — the legacy ``present_N``; an encoder-decoder's
    ``present.N.encoder.key``, a Transpose of the keys whose other Transpose the scores read
    (optimum-onnx 0.1.0's T5): the stack is walked back only through ops read by nothing else,
    so it stops at the layer's own keys and values."""
    live = _ancestors(graph, [out.name for out in graph.output if not is_cache_output(out.name)])
    producer = _producers(graph)
    readers: dict[str, set[int]] = {}
    for position, node in enumerate(graph.node):
        for name in node_inputs(node):
            readers.setdefault(name, set()).add(position)

    def feeding(name: str, stacked: bool, reader: int | None = None, depth: int = 0) -> bool:
        position = producer.get(name)
        if position is None:
            return False
        if position in live:
            return True
        node = graph.node[position]
        only_stack = reader is None or readers.get(name, set()) == {reader}
        # a per-key/value present is walked through copies of one tensor (Transpose, Reshape...),
        # not through a Concat: ``present.N.key = Concat(past, k)`` is live itself or is the layer's
        copies = stacked or node.op_type != "Concat"
        if not only_stack or not copies or depth >= 4 or node.op_type not in STACKING_OPS:
            return False
        data = node.input if node.op_type == "Concat" else node.input[:1]  # not axes or shape inputs
        return any(feeding(item, stacked, position, depth + 1) for item in data if item)
    return {out.name for out in graph.output
            if (found := cache_layer(PRESENT, out.name)) and feeding(out.name, stacked=found[1] == "")}


def drop_orphaned_outputs(graph: onnx.GraphProto, feeding_before: set[str]) -> list[str]:
    """Remove the cache outputs that fed the logits before the surgery and no longer do."""
    orphaned = sorted(feeding_before - feeding_cache_outputs(graph))
    orphaned = [name for name in orphaned if any(out.name == name for out in graph.output)]
    keep = [out for out in graph.output if out.name not in orphaned]
    del graph.output[:]
    graph.output.extend(keep)
    return orphaned


def _type_key(info: onnx.ValueInfoProto) -> tuple:
    tensor = info.type.tensor_type
    return tensor.elem_type, tuple(dim.dim_param or dim.dim_value for dim in tensor.shape.dim)


def _rename_everywhere(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name == old:
                node.input[slot] = new
        for slot, name in enumerate(node.output):
            if name == old:
                node.output[slot] = new
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        if info.name == old:
            info.name = new


def _reads_only_shape(name: str, consumers: dict[str, list[onnx.NodeProto]], depth: int = 0) -> bool:
    """Whether everything downstream of ``name`` only looks at its shape: ``Shape`` nodes, reached
    through copies (``Identity``, a one-input ``Concat`` as torch.onnx writes ``torch.cat([x])``)
    and ``Gather`` of ``name`` (a stacked past's key: its shape follows from the past's shape)."""
    for node in consumers.get(name, []):
        if node.op_type == "Shape":
            continue
        copies = node.op_type == "Identity" or (node.op_type == "Concat" and len(node.input) == 1) \
            or (node.op_type == "Gather" and node.input[0] == name and name not in node.input[1:])
        if not copies or depth > 8 or not all(_reads_only_shape(out, consumers, depth + 1) for out in node.output):
            return False
    return True


def tidy_inputs(graph: onnx.GraphProto, removed_layers: set[int]) -> dict[str, str]:
    """Steps 2 and 3 of the module doc for the layers whose present outputs were dropped;
    returns {old name: new name} of every renamed cache input and output."""
    if not removed_layers:
        return {}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node_inputs(node):
            consumers.setdefault(name, []).append(node)
    inputs = {info.name: info for info in graph.input}
    by_layer: dict[int, dict[str, str]] = {}
    for name in inputs:
        found = cache_layer(PAST, name)
        if found:
            by_layer.setdefault(found[0], {})[found[1]] = name
    kept = sorted(set(by_layer) - removed_layers)
    for layer in sorted(removed_layers & set(by_layer)):
        for part, name in by_layer[layer].items():
            readers = consumers.get(name, [])
            if readers:
                substitute = by_layer[kept[0]].get(part) if kept else None
                if substitute is None or not _reads_only_shape(name, consumers) \
                        or _type_key(inputs[name]) != _type_key(inputs[substitute]):
                    raise PruneError(f"cannot drop the cache input {name!r} of a removed layer: it is still read "
                                     "by the kept layers (and not only for its shape)")
                for node in graph.node:
                    node.input[:] = [substitute if item == name else item for item in node.input]
            kept_inputs = [info for info in graph.input if info.name != name]
            del graph.input[:]
            graph.input.extend(kept_inputs)
    renamed: dict[str, str] = {}
    outputs = {out.name for out in graph.output}
    present_layers = sorted(layers_of(list(outputs)))
    for new, old in enumerate(sorted(set(kept) | set(present_layers) - removed_layers)):
        if new == old:
            continue
        for name in [*by_layer.get(old, {}).values(), *(n for n in outputs if (found := cache_layer(PRESENT, n))
                                                        and found[0] == old)]:
            target = _renumbered(name, new)
            _rename_everywhere(graph, name, target)
            renamed[name] = target
    return renamed


def layers_of(names: list[str]) -> set[int]:
    """Layer numbers named by cache outputs (``present.3.key`` → 3)."""
    return {found[0] for found in (cache_layer(PRESENT, name) for name in names) if found}
