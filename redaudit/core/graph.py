"""The one read-only index over an ONNX graph, shared by tap, augment, prune and nas.

Every stage asks the same questions of a graph — who makes this tensor, who reads it, what is
its type, does it carry the batch axis, what depends on what — so they share one index built
once from a shape-inferred copy of the model. Nodes are referred to by their position in
``model.graph.node``; after graph surgery the index is rebuilt (it is cheap next to shape
inference, which a caller can skip by passing ``types``).

Why our own index rather than onnx_ir: every consumer here only *reads* graphs, and the one
writer (prune surgery) makes a handful of edits per model and then rebuilds; the protobuf is what
onnxruntime, the checker and shape inference consume, so an in-memory IR would be converted back
and forth on every use. See docs/architecture.md.

Edges into shape-only operators (Shape, Size) are not *data* edges: such a node reads only the
shape of its input. Residual detection and removable regions follow data edges, so an attention
mask computed from the input's shape is not mistaken for a branch of the hidden state.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx

from redaudit.core.tensor_types import FLOAT_TYPES, TensorType, infer_types

SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})
#: Operators whose output depends only on the *shape* (never the values) of their input.
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
_RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"})


def node_bodies(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The subgraphs a node carries (an If's two branches, a Loop's or Scan's body), in attribute
    order; none for any other node."""
    bodies: list[onnx.GraphProto] = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            bodies.append(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            bodies.extend(attribute.graphs)
    return bodies


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Inputs of a node, including names that If/Loop/Scan bodies capture from the outer graph:
    removing a tensor such a body reads would otherwise go unnoticed."""
    names = [name for name in node.input if name]
    for body in node_bodies(node):
        names.extend(sorted(_captured_names(body)))
    return names


def _captured_names(body: onnx.GraphProto) -> set[str]:
    local = {inp.name for inp in body.input} | {init.name for init in body.initializer}
    produced = {out for node in body.node for out in node.output}
    used: set[str] = set()
    for node in body.node:
        used.update(name for name in node_inputs(node) if name)
    return used - local - produced


def _subgraph_tensors(graph: onnx.GraphProto, into: set[str]) -> None:
    for node in graph.node:
        into.update(name for name in node.output if name)
        for subgraph in node_bodies(node):
            _subgraph_tensors(subgraph, into)


def float_initializer_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Elements of each float initializer: the weights. Integer ones are shapes and indices."""
    return {init.name: int(np.prod(init.dims)) if len(init.dims) else 1
            for init in model.graph.initializer if init.data_type in FLOAT_TYPES}


def parameter_count(model: onnx.ModelProto) -> int:
    """Float weights of the model: what scan reports, prune compares and nas minimises."""
    return int(sum(float_initializer_sizes(model).values()))


@dataclass
class GraphIndex:
    """Index of the main graph (subgraph tensors are listed separately: they cannot be tapped)."""

    model: onnx.ModelProto
    types: dict[str, TensorType] = field(default_factory=dict)
    producer: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    initializers: set[str] = field(default_factory=set)
    graph_inputs: list[str] = field(default_factory=list)
    graph_outputs: list[str] = field(default_factory=list)
    constants: set[str] = field(default_factory=set)
    activations: set[str] = field(default_factory=set)
    subgraph_tensors: set[str] = field(default_factory=set)
    batch_dims: set[int | str] = field(default_factory=set)
    folder: str | None = None  # where the model's external tensors live (read only to compare weights)

    @classmethod
    def build(cls, model: onnx.ModelProto, types: dict[str, TensorType] | None = None,
              folder: str | None = None) -> "GraphIndex":
        """Index ``model``; pass ``types`` (possibly empty) to skip shape inference."""
        graph = model.graph
        index = cls(model=model, types=types if types is not None else infer_types(model), folder=folder)
        index.initializers = {init.name for init in graph.initializer}
        index.graph_inputs = [i.name for i in graph.input if i.name not in index.initializers]
        index.graph_outputs = [o.name for o in graph.output]
        for position, node in enumerate(graph.node):
            for name in node.output:
                if name:
                    index.producer[name] = position
            for name in node_inputs(node):
                index.consumers[name].append(position)
            for subgraph in node_bodies(node):
                _subgraph_tensors(subgraph, index.subgraph_tensors)
        index.subgraph_tensors -= set(index.producer)
        index._propagate()
        for name in index.graph_inputs:
            shape = index.types.get(name, TensorType(0, None)).shape
            if shape:
                index.batch_dims.add(shape[0] if shape[0] is not None else -1)
        return index

    @property
    def nodes(self):
        return self.model.graph.node

    @property
    def output_set(self) -> frozenset[str]:
        return frozenset(self.graph_outputs)

    def _propagate(self) -> None:
        """Split tensors into constants (computable from initializers alone) and activations
        (depending on a graph input). Nodes are in topological order in a valid model."""
        self.constants = set(self.initializers)
        self.activations = set(self.graph_inputs)
        for node in self.nodes:
            inputs = node_inputs(node)
            if any(name in self.activations for name in inputs):
                self.activations.update(name for name in node.output if name)
            elif node.op_type not in SUBGRAPH_OPS and node.op_type not in _RANDOM_OPS:
                self.constants.update(name for name in node.output if name)

    # -- lookups --------------------------------------------------------------------------------
    def node_of(self, tensor: str) -> onnx.NodeProto | None:
        position = self.producer.get(tensor)
        return None if position is None else self.nodes[position]

    def consumer_nodes(self, tensor: str) -> list[onnx.NodeProto]:
        return [self.nodes[i] for i in self.consumers.get(tensor, [])]

    def has_weight(self, node: onnx.NodeProto) -> bool:
        """Whether a node applies learned parameters (a constant operand, or an op that always does)."""
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "ConvInteger", "QLinearConv", "FusedConv",
                            "LSTM", "GRU", "RNN"):
            return True
        return any(name in self.constants for name in node.input if name)

    # -- reachability ---------------------------------------------------------------------------
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
            stack.extend(node_inputs(self.nodes[position]))
        return seen

    def outputs_of(self, positions: set[int]) -> set[str]:
        return {name for position in positions for name in self.nodes[position].output if name}

    # -- tappability ----------------------------------------------------------------------------
    def has_batch_axis(self, tensor: str) -> bool:
        """Whether the tensor's first axis may be the batch axis, as far as typing tells.

        Shape inference renames symbolic dimensions freely, so any symbolic or unknown first
        dimension is accepted; a fixed one must equal a fixed batch size of the inputs. The
        runner double-checks real shapes on the first batch and drops taps that fail.
        """
        tensor_type = self.types.get(tensor)
        if tensor_type is None or tensor_type.shape is None:
            return tensor_type is not None
        if not tensor_type.shape:
            return False
        first = tensor_type.shape[0]
        if first is None or isinstance(first, str):
            return True
        fixed = {dim for dim in self.batch_dims if isinstance(dim, int) and dim > 0}
        return first in fixed

    def is_tappable(self, tensor: str) -> bool:
        """A float activation with a batch axis, produced by a node of the main graph."""
        if tensor not in self.producer or tensor in self.initializers or tensor in self.graph_inputs:
            return False
        if tensor not in self.activations:
            return False
        tensor_type = self.types.get(tensor)
        if tensor_type is None or not tensor_type.is_float:
            return False
        if tensor_type.shape is not None and len(tensor_type.shape) < 2:
            return False
        return self.has_batch_axis(tensor)
