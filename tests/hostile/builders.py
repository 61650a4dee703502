"""Hostile model files and .npz archives, built in code (nothing binary is committed).

Each builder takes the folder to write into and returns the path to hand to the CLI. The
models are tiny (an 8-wide MLP) so that the cases that do run finish in a fraction of a second.
"""
from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
WIDTH = 8


def tiny_mlp(batch: int | str = "N", width: int = WIDTH, layers: int = 3, seed: int = 0,
             input_name: str = "x") -> onnx.ModelProto:
    """Gemm+Relu × ``layers`` on (batch, width): a valid model with a few layer taps."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = input_name
    for i in range(layers):
        inits += [numpy_helper.from_array(rng.normal(0, 0.5, (width, width)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.normal(0, 0.1, width).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [f"h{i}"], name=f"fc{i}"),
                  helper.make_node("Relu", [f"h{i}"], [f"a{i}"], name=f"relu{i}")]
        current = f"a{i}"
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, width])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, [batch, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hostile")
    model.ir_version = 8
    return model


def save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def _bytes(data: bytes, name: str = "model.onnx") -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path
    return build


def _model(change: Callable[[onnx.ModelProto], object], name: str = "model.onnx") -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        model = tiny_mlp()
        change(model)
        return save(model, folder, name)
    return build


# ----------------------------------------------------------------------------- external data


def external(offset: object = None, length: object = None, location: str = "weights.bin",
             data_size: int = WIDTH * WIDTH * 4, write_data: bool = True,
             extra: dict[str, str] | None = None) -> Callable[[Path], Path]:
    """The first weight moved to external data with the given (possibly hostile) fields."""
    def build(folder: Path) -> Path:
        model = tiny_mlp()
        tensor = model.graph.initializer[0]
        raw = numpy_helper.to_array(tensor).tobytes()
        tensor.ClearField("float_data")
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        entries = [("location", location), *(extra or {}).items()]
        if offset is not None:
            entries.append(("offset", offset))
        if length is not None:
            entries.append(("length", length))
        for key, value in entries:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
        if write_data and location and not os.path.isabs(location) and ".." not in location:
            data = (raw * (data_size // len(raw) + 1))[:data_size]
            (folder / location).parent.mkdir(parents=True, exist_ok=True)
            (folder / location).write_bytes(data)
        return save(model, folder)
    return build


def patch_bytes(model_bytes: bytes, placeholder: bytes, value: bytes) -> bytes:
    assert model_bytes.count(placeholder) >= 1
    return model_bytes.replace(placeholder, value)


def invalid_utf8(where: str) -> Callable[[Path], Path]:
    """A tensor name, external location, node name or graph name that is not valid UTF-8."""
    bad = b"\xff\xfe\xc3\x28abcd"
    placeholder = b"QQQQQQQQ"  # same length as bad

    def build(folder: Path) -> Path:
        model = tiny_mlp()
        if where == "initializer name":
            old = model.graph.initializer[0].name
            model.graph.initializer[0].name = placeholder.decode()
            model.graph.node[0].input[1] = placeholder.decode()
            assert old
        elif where == "node name":
            model.graph.node[0].name = placeholder.decode()
        elif where == "graph name":
            model.graph.name = placeholder.decode()
        elif where == "input name":
            model.graph.input[0].name = placeholder.decode()
            model.graph.node[0].input[0] = placeholder.decode()
        elif where == "op type":
            model.graph.node[2].op_type = placeholder.decode()
        elif where == "doc string":
            model.doc_string = placeholder.decode()
        elif where == "metadata":
            entry = model.metadata_props.add()
            entry.key, entry.value = "k", placeholder.decode()
        elif where == "external location":
            tensor = model.graph.initializer[0]
            tensor.ClearField("float_data")
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            entry = tensor.external_data.add()
            entry.key, entry.value = "location", placeholder.decode()
        elif where == "external key":
            tensor = model.graph.initializer[0]
            tensor.ClearField("float_data")
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            entry = tensor.external_data.add()
            entry.key, entry.value = "location", "weights.bin"
            entry = tensor.external_data.add()
            entry.key, entry.value = placeholder.decode(), "1"
            (folder / "weights.bin").write_bytes(b"\0" * WIDTH * WIDTH * 4)
        else:
            raise ValueError(where)
        path = folder / "model.onnx"
        path.write_bytes(patch_bytes(model.SerializeToString(), placeholder, bad))
        return path
    return build


# ----------------------------------------------------------------------------- structural


def _wrong_input(kind: str) -> Callable[[onnx.ModelProto], None]:
    def change(model: onnx.ModelProto) -> None:
        value = model.graph.input[0]
        if kind == "sequence":
            value.type.CopyFrom(helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [WIDTH])))
        elif kind == "scalar":
            value.type.tensor_type.shape.ClearField("dim")
        elif kind == "string":
            value.type.tensor_type.elem_type = TensorProto.STRING
        elif kind == "complex":
            value.type.tensor_type.elem_type = TensorProto.COMPLEX64
        elif kind == "negative dim":
            value.type.tensor_type.shape.dim[1].dim_value = -5
        elif kind == "no shape":
            value.type.tensor_type.ClearField("shape")
        elif kind == "huge dim":
            value.type.tensor_type.shape.dim[1].dim_value = 2**62
        elif kind == "float16":
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
        else:
            raise ValueError(kind)
    return change


def _cycle(model: onnx.ModelProto) -> None:
    model.graph.node[0].input[0] = "a0"


def _dangling(model: onnx.ModelProto) -> None:
    model.graph.node[0].input[1] = "no_such_weight"


def _duplicate_output(model: onnx.ModelProto) -> None:
    model.graph.node[2].output[0] = "h0"


def _unknown_op(model: onnx.ModelProto) -> None:
    model.graph.node[1].op_type = "NoSuchOp"


def _custom_domain(model: onnx.ModelProto) -> None:
    model.graph.node[1].domain = "com.hostile"
    model.opset_import.append(helper.make_opsetid("com.hostile", 1))


def _future_opset(model: onnx.ModelProto) -> None:
    model.opset_import[0].version = 999


def _future_ir(model: onnx.ModelProto) -> None:
    model.ir_version = 99


def _zero_ir(model: onnx.ModelProto) -> None:
    model.ir_version = 0


def _no_nodes(model: onnx.ModelProto) -> None:
    del model.graph.node[:]


def _no_outputs(model: onnx.ModelProto) -> None:
    del model.graph.output[:]


def _no_inputs(model: onnx.ModelProto) -> None:
    """Every input turned into an initializer: nothing to probe."""
    model.graph.initializer.append(numpy_helper.from_array(np.ones((2, WIDTH), np.float32), "x"))
    del model.graph.input[:]


def _raw_data_short(model: onnx.ModelProto) -> None:
    tensor = model.graph.initializer[0]
    data = numpy_helper.to_array(tensor).tobytes()
    tensor.ClearField("float_data")
    tensor.raw_data = data[:-4]


def _wrong_dims(model: onnx.ModelProto) -> None:
    model.graph.initializer[0].dims[0] = WIDTH + 3


def _nan_weights(model: onnx.ModelProto) -> None:
    for tensor in model.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(tensor).shape, np.nan, np.float32),
                                                tensor.name))


def _inf_weights(model: onnx.ModelProto) -> None:
    tensor = model.graph.initializer[0]
    tensor.CopyFrom(numpy_helper.from_array(np.full((WIDTH, WIDTH), np.inf, np.float32), tensor.name))


def _zero_weights(model: onnx.ModelProto) -> None:
    for tensor in model.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(np.zeros(numpy_helper.to_array(tensor).shape, np.float32), tensor.name))


def _bad_attribute(model: onnx.ModelProto) -> None:
    model.graph.node[0].attribute.append(helper.make_attribute("transB", 7))


def _function_recursion(model: onnx.ModelProto) -> None:
    """A model-local function that calls itself."""
    inner = helper.make_node("Loopy", ["X"], ["Y"], domain="local")
    function = helper.make_function("local", "Loopy", ["X"], ["Y"], [inner], [helper.make_opsetid("", OPSET)])
    model.functions.append(function)
    model.opset_import.append(helper.make_opsetid("local", 1))
    model.graph.node[1].op_type = "Loopy"
    model.graph.node[1].domain = "local"
    model.graph.node[1].ClearField("attribute")


def _wrong_message() -> bytes:
    return numpy_helper.from_array(np.ones((3, 3), np.float32), "t").SerializeToString()


def _deep_nesting() -> bytes:
    """Protobuf nested 10,000 levels deep (groups of length-delimited field 7 = graph)."""
    payload = b""
    for _ in range(10_000):
        payload = b"\x3a" + _varint(len(payload)) + payload
    return b"\x08\x08" + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _huge_length_prefix() -> bytes:
    """A field claiming a 2 GB length in a 20-byte file."""
    return b"\x08\x08\x3a" + _varint(2**31 - 1) + b"\x00" * 16


def _symlink_outside(folder: Path) -> Path:
    outside = folder / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"\0" * WIDTH * WIDTH * 4)
    inner = folder / "m"
    inner.mkdir()
    (inner / "weights.bin").symlink_to(outside / "secret.bin")
    model_path = external()(inner)
    return model_path


def _directory(folder: Path) -> Path:
    path = folder / "dir.onnx"
    path.mkdir()
    return path


def _symlink_loop(folder: Path) -> Path:
    path = folder / "loop.onnx"
    os.symlink(path, path)
    return path


def _missing(folder: Path) -> Path:
    return folder / "missing.onnx"


def _fifo(folder: Path) -> Path:
    path = folder / "fifo.onnx"
    os.mkfifo(path)
    return path


def _npy_as_model(folder: Path) -> Path:
    path = folder / "model.onnx"
    buffer = io.BytesIO()
    np.save(buffer, np.ones(4))
    path.write_bytes(buffer.getvalue())
    return path


#: name → builder(folder) → path. Every one must be refused with one line (exit 2).
REFUSED_MODELS: dict[str, Callable[[Path], Path]] = {
    "missing file": _missing,
    "directory": _directory,
    "symlink loop": _symlink_loop,
    "fifo": _fifo,
    "empty file": _bytes(b""),
    "text file": _bytes(b"this is a text file, not a model\n" * 20),
    "random bytes": _bytes(np.random.default_rng(1).bytes(4096)),
    "single zero byte": _bytes(b"\0"),
    "truncated model": lambda folder: _bytes(tiny_mlp().SerializeToString()[:300])(folder),
    "tensor proto instead of model": _bytes(_wrong_message()),
    "npy file named .onnx": _npy_as_model,
    "zip file named .onnx": _bytes(b"PK\x03\x04" + b"\0" * 100),
    "protobuf nested 10000 deep": _bytes(_deep_nesting()),
    "length prefix 2 GB": _bytes(_huge_length_prefix()),
    "ir_version 0": _model(_zero_ir),
    "ir_version 99": _model(_future_ir),
    "no nodes": _model(_no_nodes),
    "no inputs": _model(_no_inputs),
    "dangling input": _model(_dangling),
    "cycle": _model(_cycle),
    "duplicate output name": _model(_duplicate_output),
    "unknown op": _model(_unknown_op),
    "recursive local function": _model(_function_recursion),
    "raw_data too short": _model(_raw_data_short),
    "initializer dims wrong": _model(_wrong_dims),
    "sequence input": _model(_wrong_input("sequence")),
    "scalar input": _model(_wrong_input("scalar")),
    "string input": _model(_wrong_input("string")),
    "complex input": _model(_wrong_input("complex")),
    "negative input dim": _model(_wrong_input("negative dim")),
    "input without shape": _model(_wrong_input("no shape")),
    "ext: absolute location": external(location="/etc/passwd"),
    "ext: location climbs out": external(location="../weights.bin"),
    "ext: empty location": external(location=""),
    "ext: symlink outside folder": _symlink_outside,
    "ext: missing data file": external(write_data=False),
    "ext: data file truncated": external(data_size=10),
    "ext: offset negative": external(offset=-8),
    "ext: offset non-numeric": external(offset="abc"),
    "ext: offset float": external(offset="1.5"),
    "ext: offset huge": external(offset=2**70),
    "ext: offset past end": external(offset=10_000),
    "ext: length negative": external(length=-1),
    "ext: length non-numeric": external(length="lots"),
    "ext: length past end": external(length=10**9),
    "ext: length too short for tensor": external(length=8),
    "ext: location is folder": external(location="sub/", write_data=False),
    "ext: location with NUL": external(location="weights\0.bin", write_data=False),
    "ext: location 5000 chars": external(location="w" * 5000, write_data=False),
    "ext: location is the model": external(location="model.onnx", length=10**6, write_data=False),
    "ext: unknown key and truncated": external(extra={"__class__": "x", "checksum": "0"}, data_size=10),
    "utf8: initializer name": invalid_utf8("initializer name"),
    "utf8: input name": invalid_utf8("input name"),
    "utf8: node name": invalid_utf8("node name"),
    "utf8: graph name": invalid_utf8("graph name"),
    "utf8: op type": invalid_utf8("op type"),
    "utf8: doc string": invalid_utf8("doc string"),
    "utf8: metadata value": invalid_utf8("metadata"),
    "utf8: external location": invalid_utf8("external location"),
    "utf8: external key": invalid_utf8("external key"),
}

#: Valid, if unusual, models: they must scan (exit 0) or be refused with one line.
ODD_MODELS: dict[str, Callable[[Path], Path]] = {
    "fixed batch 3": lambda folder: save(tiny_mlp(batch=3), folder),
    "fixed batch 1": lambda folder: save(tiny_mlp(batch=1), folder),
    "fixed batch 7": lambda folder: save(tiny_mlp(batch=7), folder),
    "nan weights": _model(_nan_weights),
    "inf weights": _model(_inf_weights),
    "zero weights": _model(_zero_weights),
    "float16 input": _model(_wrong_input("float16")),
    "unicode names": lambda folder: save(tiny_mlp(input_name="входные данные ✓"), folder, "模型 ✓.onnx"),
    "no outputs": _model(_no_outputs),
    "attribute out of range": _model(_bad_attribute),
    "opset 999": _model(_future_opset),
    "custom domain op": _model(_custom_domain),
    "ext: unknown keys ignored": external(extra={"__class__": "x", "compression": "zstd"}),
    "ext: valid offset and length": external(offset=0, length=WIDTH * WIDTH * 4),
    "file name with spaces and newline": lambda folder: save(tiny_mlp(), folder, "a b\nc.onnx"),
}
