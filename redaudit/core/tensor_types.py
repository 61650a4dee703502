"""What type and shape each tensor of a graph has: the one parser of ONNX tensor types, ONNX's
shape inference, and onnxruntime's symbolic shape inference for the contrib ops ONNX has no schema
for (a graph onnxruntime's transformer optimizer fused). :class:`~redaudit.core.graph.GraphIndex`
is built on it; cost and liveness estimates read it directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16})


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
        inferred = _symbolic_types(model)
    except Exception:  # noqa: BLE001 - typing is best effort; an untyped tensor is simply not tapped
        return {}
    graph = inferred.graph
    found = {info.name: tensor_type_of(info.type) for info in [*graph.value_info, *graph.output]}
    return {name: kind for name, kind in found.items() if kind is not None}


def _symbolic_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` typed by onnxruntime's symbolic shape inference, as far as it gets. Its own
    ``infer_shapes`` is not called: when it cannot type every tensor it saves the whole model,
    weights as external data, as ``sym_shape_infer_temp.onnx`` in the working directory and
    raises (onnxruntime 1.32) — a scan would leave a copy of a 2.5 GB model wherever the user
    stands, and lose the types it did find. So its loop is run here, without the save."""
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)
    if opset < 7:  # upstream's own guard: it supports opset 7 and above
        return model
    inference = _symbolic_shape_inference()(2**31 - 1, True, False, 0)  # int_max, auto_merge, guess rank, verbose
    inference._preprocess(model)
    while inference.run_:
        inference._infer_impl()
    inference._update_output_from_vi()
    return inference.out_mp_


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
