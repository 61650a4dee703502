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
from onnx import TensorProto

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16})
SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})
#: Operators whose output depends only on the *shape* (never the values) of their input.
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
_RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"})


@dataclass(frozen=True)
class TensorType:
    """Element type and shape; ``shape`` None = unknown rank; a dim is an int, a symbol or None."""

    elem_type: int
    shape: tuple[int | str | None, ...] | None

    @property
    def is_float(self) -> bool:
        return self.elem_type in FLOAT_TYPES

    @property
    def dtype_name(self) -> str:
        return TensorProto.DataType.Name(self.elem_type).lower()

    def pretty_shape(self) -> tuple[int | str, ...]:
        """Shape for display: unknown dims and symbols invented by shape inference become '?'."""
        return tuple("?" if d is None or (isinstance(d, str) and d.startswith("unk__")) else d
                     for d in (self.shape or ()))

    def same_as(self, other: "TensorType") -> bool:
        """True when both are fully known and identical (symbolic dims must match by name)."""
        if self.shape is None or other.shape is None or self.elem_type != other.elem_type:
            return False
        if any(dim is None for dim in self.shape) or any(dim is None for dim in other.shape):
            return False
        return self.shape == other.shape


def tensor_type_of(type_proto: onnx.TypeProto) -> TensorType | None:
    """The one parser of ONNX tensor types; None for sequences and maps."""
    if not type_proto.HasField("tensor_type"):
        return None
    tensor_type = type_proto.tensor_type
    if not tensor_type.HasField("shape"):
        return TensorType(tensor_type.elem_type, None)
    # A dim_value of 0 or -1 (paddle2onnx writes -1 for a dynamic batch) is unknown, not a size.
    dims = tuple((int(dim.dim_value) if dim.dim_value > 0 else None) if dim.HasField("dim_value")
                 else dim.dim_param if dim.HasField("dim_param") else None for dim in tensor_type.shape.dim)
    return TensorType(tensor_type.elem_type, dims)


def infer_types(model: onnx.ModelProto) -> dict[str, TensorType]:
    """Types of every tensor shape inference can type (best effort: a model it cannot infer
    still gets the types declared in the file)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is an optimisation of typing, not a requirement
        inferred = model
    graph = inferred.graph
    types: dict[str, TensorType] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        found = tensor_type_of(info.type)
        if found is not None:
            types[info.name] = found
    for name, found in _contrib_types(model, types).items():
        types.setdefault(name, found)
    for init in model.graph.initializer:
        types.setdefault(init.name, TensorType(init.data_type, tuple(int(d) for d in init.dims)))
    return types


def _contrib_types(model: onnx.ModelProto, known: dict[str, TensorType]) -> dict[str, TensorType]:
    """Types ONNX's inference leaves out in a graph with onnxruntime contrib ops (com.microsoft:
    SkipLayerNormalization, Attention, FastGelu... from onnxruntime's transformer optimizer).
    ONNX has no schema for them, so everything downstream of the first one is untyped and not
    tappable; onnxruntime's own symbolic shape inference knows them. Only run when such an op
    has an untyped output (it is pure Python, and copies the proto); best effort."""
    untyped = any(node.domain == "com.microsoft" and any(name and name not in known for name in node.output)
                  for node in model.graph.node)
    if not untyped:
        return {}
    try:
        inferred = _symbolic_shape_inference().infer_shapes(model, auto_merge=True)
    except Exception:  # noqa: BLE001 - typing is best effort; an untyped tensor is simply not tapped
        return {}
    if inferred is None:
        return {}
    graph = inferred.graph
    found = {info.name: tensor_type_of(info.type) for info in [*graph.value_info, *graph.output]}
    return {name: kind for name, kind in found.items() if kind is not None}


_SYMBOLIC_MODULE = "redaudit._ort_symbolic_shape_infer"


def _symbolic_shape_inference() -> type:
    """onnxruntime's ``SymbolicShapeInference``, loaded from its file. Imported as
    ``onnxruntime.tools.symbolic_shape_infer`` it first runs ``onnxruntime/tools/__init__.py``,
    which imports torch whenever torch is installed (for a helper unrelated to shapes): measured
    1.0 s of the 1.2 s a fused graph's load took, against 0.2 s for the module and sympy and
    0.06 s for the inference of a 3-layer graph. The module needs only onnx, numpy, sympy and
    packaging; the package import stays the fallback should the file move."""
    import importlib.util
    import sys
    from pathlib import Path

    module = sys.modules.get(_SYMBOLIC_MODULE)
    if module is None:
        found = importlib.util.find_spec("onnxruntime")
        folders = list(found.submodule_search_locations or []) if found is not None else []
        path = next((Path(folder) / "tools" / "symbolic_shape_infer.py" for folder in folders
                     if (Path(folder) / "tools" / "symbolic_shape_infer.py").is_file()), None)
        spec = importlib.util.spec_from_file_location(_SYMBOLIC_MODULE, path) if path is not None else None
        if spec is None or spec.loader is None:
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            return SymbolicShapeInference
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[_SYMBOLIC_MODULE] = module
    return module.SymbolicShapeInference


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Inputs of a node, including names that If/Loop/Scan bodies capture from the outer graph:
    removing a tensor such a body reads would otherwise go unnoticed."""
    names = [name for name in node.input if name]
    for attr in node.attribute:
        bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for body in bodies:
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
        for attribute in node.attribute:
            for subgraph in [attribute.g, *attribute.graphs] if attribute.type in (
                    onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) else ():
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
            for attribute in node.attribute:
                if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    for subgraph in [attribute.g, *attribute.graphs]:
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
