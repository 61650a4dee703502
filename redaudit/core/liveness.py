"""onnxruntime's allocation planner, simulated on a graph: bytes per sample of every tensor and
the peak of what is alive at once (see :mod:`redaudit.core.memory` for how it is used and how
well it matches measurements)."""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from redaudit.core.kv_layout import batch_axis
from redaudit.core.prepared import PreparedModel
from redaudit.core.probe import DEFAULT_SYMBOLIC_DIM
from redaudit.core.tensor_types import infer_types

_SMALL_INITIALIZER = 4096  # elements kept when re-inferring shapes (Reshape targets, indices)


def per_sample_graph(proto: onnx.ModelProto, dims: dict[str, int]) -> onnx.ModelProto:
    """A weightless copy of the (augmented) graph whose inputs have batch 1 and every symbolic dim resolved,
    for shape inference: large initializers become typed inputs (their data is not needed)."""
    graph = proto.graph
    small = [init for init in graph.initializer if math.prod(init.dims) <= _SMALL_INITIALIZER]
    small_names = {init.name for init in small}
    inputs = []
    for value in graph.input:
        if value.name in small_names:
            continue
        tensor = value.type.tensor_type
        shape = []
        samples = batch_axis(value)  # 1 for a legacy stacked past (2, batch, …)
        for axis, dim in enumerate(tensor.shape.dim):
            if axis == samples:
                shape.append(1)
            elif dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(int(dim.dim_value))
            else:
                key = dim.dim_param if dim.HasField("dim_param") else f"{value.name}:{axis}"
                shape.append(dims.get(key, DEFAULT_SYMBOLIC_DIM))
        inputs.append(helper.make_tensor_value_info(value.name, tensor.elem_type, shape))
    declared = {value.name for value in graph.input}
    for init in graph.initializer:
        if init.name not in small_names and init.name not in declared:
            inputs.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    copy = helper.make_graph(list(graph.node), graph.name or "g", inputs, list(graph.output), small)
    model = helper.make_model(copy, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    model.functions.extend(proto.functions)
    return model


def tensor_sizes(proto: onnx.ModelProto, activations: set[str], dims: dict[str, int]) -> tuple[dict[str, int], int]:
    """Bytes per sample of every activation (batch 1), and how many could not be sized."""
    types = infer_types(per_sample_graph(proto, dims))
    sizes, unsized = {}, 0
    for name in activations:
        found = types.get(name)
        if found is None or found.shape is None or any(not isinstance(d, int) or d < 0 for d in found.shape):
            unsized += 1
            continue
        sizes[name] = math.prod(found.shape) * np.dtype(helper.tensor_dtype_to_np_dtype(found.elem_type)).itemsize
    return sizes, unsized


#: Operators whose output is a view of their first input in onnxruntime (no new buffer).
_ALIAS_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
#: Elementwise operators onnxruntime may run in place when an input of the output's size dies there.
_INPLACE_OPS = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Add", "Sub", "Mul", "Div", "Clip", "Elu",
                          "HardSigmoid", "Softplus", "Erf", "Sqrt", "Neg", "Abs", "Exp", "Gelu", "FastGelu",
                          "BatchNormalization", "Cast", "Softmax"})


def live_peak(graph: onnx.GraphProto, sizes: dict[str, int]) -> int:
    """Largest sum of live buffer bytes over a run in node order, as onnxruntime's planner sees
    it: graph outputs live to the end, views (Reshape...) share their input's buffer, and
    elementwise ops reuse an input buffer of the same size that dies at them."""
    keep = {output.name for output in graph.output}
    buffer_of: dict[str, str] = {}  # tensor -> the tensor whose buffer it uses
    last_use: dict[str, int] = {}
    for position, node in enumerate(graph.node):
        for name in node.input:
            last_use[name] = position
    for position, node in enumerate(graph.node):  # a view extends its buffer's life
        for name in node.output:
            if node.op_type in _ALIAS_OPS and node.input and node.input[0] in sizes:
                root = buffer_of.get(node.input[0], node.input[0])
                buffer_of[name] = root
                last_use[root] = max(last_use.get(root, position), last_use.get(name, position))
                if name in keep:
                    keep.add(root)
    inputs = {value.name for value in graph.input}
    live, peak, freed = 0, 0, set(inputs)  # inputs belong to the caller, not the arena
    for position, node in enumerate(graph.node):
        reusable = [buffer_of.get(n, n) for n in node.input if n in sizes and n not in inputs]
        reusable = [n for n in reusable if n not in keep and n not in freed and last_use.get(n, -1) <= position]
        for name in node.output:
            if not name or name not in sizes or name in buffer_of:
                continue
            donor = next((n for n in reusable if sizes[n] == sizes[name]), None) \
                if node.op_type in _INPLACE_OPS else None
            if donor is not None:
                reusable.remove(donor)
                buffer_of[name] = donor
                last_use[donor] = max(last_use.get(name, position), position)
                if name in keep:
                    keep.add(donor)
                continue
            live += sizes[name]
        peak = max(peak, live)
        for name in (*node.input, *node.output):
            root = buffer_of.get(name, name)
            if root in sizes and root not in keep and root not in freed and last_use.get(root, -1) <= position:
                live -= sizes[root]
                freed.add(root)
    return peak


def planned_tensors(prepared: PreparedModel, sizes: dict[str, int]) -> dict[str, int]:
    """The tensors onnxruntime's memory pattern plans: those whose shape it can resolve from the
    input shapes alone (integers and the inputs' own symbols; not ``unk__`` symbols that shape
    inference invents after a data-dependent Reshape)."""
    symbols = {dim for spec in prepared.input_specs for dim in spec.shape if isinstance(dim, str)}
    planned = {}
    for name, size in sizes.items():
        found = prepared.index.types.get(name)
        if found is None or (found.shape is not None
                             and all(isinstance(d, int) or d in symbols for d in found.shape)):
            planned[name] = size
    return planned
