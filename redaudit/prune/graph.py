"""A read-only index of an ONNX graph for pruning: who produces and who consumes each tensor,
tensor types from shape inference, and the reachability sets that define a removable region.

Edges into shape-only operators (Shape, Size) are not *data* edges: such a node reads only the
shape of its input, and a removable block preserves shape, so a Shape node that reads a block's
input keeps working after the block is gone. Treating those edges as data would make every
transformer layer look entangled with the next one through shared shape arithmetic.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

from redaudit.core.graph import elem_type_and_dims

#: Operators whose output depends only on the *shape* (never the values) of their input.
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                         TensorProto.DOUBLE})


@dataclass(frozen=True)
class TensorType:
    """Element type and shape of a tensor; a dim is an int, a symbolic name, or None (unknown)."""

    elem_type: int
    shape: tuple[int | str | None, ...] | None

    @property
    def dtype_name(self) -> str:
        return TensorProto.DataType.Name(self.elem_type).lower()

    def same_as(self, other: TensorType) -> bool:
        """True when both are fully known and identical (symbolic dims must match by name)."""
        if self.shape is None or other.shape is None or self.elem_type != other.elem_type:
            return False
        if any(dim is None for dim in self.shape) or any(dim is None for dim in other.shape):
            return False
        return self.shape == other.shape


def _tensor_type(type_proto: onnx.TypeProto) -> TensorType | None:
    parsed = elem_type_and_dims(type_proto)
    return None if parsed is None else TensorType(*parsed)


def infer_types(model: onnx.ModelProto) -> dict[str, TensorType]:
    """Types of every tensor the shape inference can type (inputs, outputs, intermediates)."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    types: dict[str, TensorType] = {}
    graph = inferred.graph
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        found = _tensor_type(info.type)
        if found is not None:
            types[info.name] = found
    for init in graph.initializer:
        types.setdefault(init.name, TensorType(init.data_type, tuple(init.dims)))
    return types


@dataclass
class GraphIndex:
    """Producer/consumer maps over the top-level graph, nodes referred to by position."""

    model: onnx.ModelProto
    types: dict[str, TensorType] = field(default_factory=dict)
    producer: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    graph_outputs: set[str] = field(default_factory=set)
    graph_inputs: set[str] = field(default_factory=set)
    initializers: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, model: onnx.ModelProto, types: dict[str, TensorType] | None = None) -> GraphIndex:
        index = cls(model=model, types=types if types is not None else infer_types(model))
        graph = model.graph
        for position, node in enumerate(graph.node):
            for name in node.output:
                if name:
                    index.producer[name] = position
            for name in node_inputs(node):
                index.consumers[name].append(position)
        index.graph_outputs = {out.name for out in graph.output}
        index.initializers = {init.name for init in graph.initializer}
        index.graph_inputs = {inp.name for inp in graph.input} - index.initializers
        return index

    @property
    def nodes(self):
        return self.model.graph.node

    def data_descendants(self, tensor: str) -> set[int]:
        """Nodes reachable from ``tensor`` along data edges (not through Shape/Size)."""
        seen: set[int] = set()
        stack = [tensor]
        while stack:
            name = stack.pop()
            for position in self.consumers.get(name, ()):
                node = self.nodes[position]
                if position in seen or node.op_type in SHAPE_ONLY_OPS:
                    continue
                seen.add(position)
                stack.extend(out for out in node.output if out)
        return seen

    def ancestors(self, tensor: str) -> set[int]:
        """Nodes that ``tensor`` depends on, its producer included (all edges)."""
        seen: set[int] = set()
        stack = [tensor]
        while stack:
            position = self.producer.get(stack.pop())
            if position is None or position in seen:
                continue
            seen.add(position)
            stack.extend(name for name in node_inputs(self.nodes[position]) if name)
        return seen

    def outputs_of(self, positions: set[int]) -> set[str]:
        return {name for position in positions for name in self.nodes[position].output if name}


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Inputs of a node, including names that If/Loop/Scan bodies capture from the outer graph:
    removing a tensor such a body reads would otherwise go unnoticed."""
    names = [name for name in node.input if name]
    for attr in node.attribute:
        bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for body in bodies:
            names.extend(_captured_names(body))
    return names


def _captured_names(body: onnx.GraphProto) -> set[str]:
    local = {inp.name for inp in body.input} | {init.name for init in body.initializer}
    produced = {out for node in body.node for out in node.output}
    used: set[str] = set()
    for node in body.node:
        used.update(name for name in node_inputs(node) if name)
    return used - local - produced
