"""A read-only index over an ONNX graph: producers, consumers, types, constants, reachability.

Tapping, pruning and reporting all ask the same questions of a graph ("who makes this
tensor", "is it an activation that carries the batch axis"), so they share one index built
once from a shape-inferred copy of the model.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
SUBGRAPH_OPS = {"If", "Loop", "Scan"}


@dataclass(frozen=True)
class TensorType:
    elem_type: int
    shape: tuple[int | str | None, ...] | None  # None = unknown rank; str = symbolic dim

    @property
    def is_float(self) -> bool:
        return self.elem_type in FLOAT_TYPES

    def pretty_shape(self) -> tuple[int | str, ...]:
        """Shape for display: unknown dims and symbols invented by shape inference become '?'."""
        return tuple("?" if d is None or (isinstance(d, str) and d.startswith("unk__")) else d
                     for d in (self.shape or ()))


def elem_type_and_dims(type_proto: onnx.TypeProto) -> tuple[int, tuple[int | str | None, ...] | None] | None:
    """(element type, dims) of a tensor type; dims None when the rank is unknown, a dim None when
    it has neither a value nor a symbol. None for non-tensor types (sequences, maps)."""
    if not type_proto.HasField("tensor_type"):
        return None
    tensor_type = type_proto.tensor_type
    if not tensor_type.HasField("shape"):
        return tensor_type.elem_type, None
    dims = tuple(int(dim.dim_value) if dim.HasField("dim_value") else dim.dim_param if dim.HasField("dim_param")
                 else None for dim in tensor_type.shape.dim)
    return tensor_type.elem_type, dims


def _type_of(value_info: onnx.ValueInfoProto) -> TensorType | None:
    parsed = elem_type_and_dims(value_info.type)
    return None if parsed is None else TensorType(*parsed)


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape-inferred copy; falls back to the model itself when inference fails (best effort)."""
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is an optimisation of typing, not a requirement
        return model


@dataclass
class GraphIndex:
    """Index of the main graph (subgraph tensors are listed separately: they cannot be tapped)."""

    model: onnx.ModelProto
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    producer: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    types: dict[str, TensorType] = field(default_factory=dict)
    initializers: set[str] = field(default_factory=set)
    graph_inputs: list[str] = field(default_factory=list)
    graph_outputs: list[str] = field(default_factory=list)
    constants: set[str] = field(default_factory=set)
    activations: set[str] = field(default_factory=set)
    subgraph_tensors: set[str] = field(default_factory=set)
    batch_dims: set[int | str] = field(default_factory=set)

    @classmethod
    def build(cls, model: onnx.ModelProto) -> "GraphIndex":
        inferred = infer_shapes(model)
        graph = inferred.graph
        index = cls(model=model)
        index.nodes = list(model.graph.node)
        index.initializers = {init.name for init in graph.initializer}
        index.graph_inputs = [i.name for i in graph.input if i.name not in index.initializers]
        index.graph_outputs = [o.name for o in graph.output]
        for value_info in [*graph.input, *graph.value_info, *graph.output]:
            tensor_type = _type_of(value_info)
            if tensor_type is not None:
                index.types[value_info.name] = tensor_type
        for position, node in enumerate(index.nodes):
            for name in node.output:
                if name:
                    index.producer[name] = position
            for name in node.input:
                if name:
                    index.consumers[name].append(position)
            for attribute in node.attribute:
                for subgraph in [attribute.g, *attribute.graphs]:
                    index._collect_subgraph(subgraph)
        index._propagate()
        for name in index.graph_inputs:
            shape = index.types.get(name, TensorType(0, None)).shape
            if shape:
                index.batch_dims.add(shape[0] if shape[0] is not None else -1)
        return index

    def _collect_subgraph(self, graph: onnx.GraphProto) -> None:
        for node in graph.node:
            self.subgraph_tensors.update(name for name in node.output if name)
            for attribute in node.attribute:
                for subgraph in [attribute.g, *attribute.graphs]:
                    self._collect_subgraph(subgraph)

    def _propagate(self) -> None:
        """Split tensors into constants (computable from initializers alone) and activations
        (depending on a graph input). Nodes are in topological order in a valid model."""
        self.constants = set(self.initializers)
        self.activations = set(self.graph_inputs)
        for node in self.nodes:
            inputs = [name for name in node.input if name]
            if any(name in self.activations for name in inputs):
                self.activations.update(name for name in node.output if name)
            elif node.op_type not in SUBGRAPH_OPS and node.op_type not in ("RandomNormal", "RandomUniform"):
                self.constants.update(name for name in node.output if name)

    def node_of(self, tensor: str) -> onnx.NodeProto | None:
        position = self.producer.get(tensor)
        return None if position is None else self.nodes[position]

    def consumer_nodes(self, tensor: str) -> list[onnx.NodeProto]:
        return [self.nodes[i] for i in self.consumers.get(tensor, [])]

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
