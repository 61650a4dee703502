"""Language-model inputs: recognised by name and role, generated consistently (token ids within
the vocabulary, a mask of ones, positions from the mask, an empty past), completed from real
token ids or text, pooled without padding; a fused-attention layout refused in one line."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import redaudit
from redaudit.cli.main import cli
from redaudit.core.probe import input_specs, make_probe
from redaudit.errors import ConfigError, ProbeInputError

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
import lm_exports  # after the skips: it needs torch and transformers

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm_inputs")
    built: dict[tuple[str, bool], lm_exports.TinyLM] = {}

    def get(arch: str = "llama", kv_cache: bool = False) -> lm_exports.TinyLM:
        if (arch, kv_cache) not in built:
            built[arch, kv_cache] = lm_exports.export(folder / f"{arch}_{kv_cache}.onnx", arch, layers=2,
                                                     kv_cache=kv_cache, kv_heads=2 if arch == "llama" else None)
        return built[arch, kv_cache]
    return get


def _first_batch(path, **options) -> dict[str, np.ndarray]:
    probe = make_probe(input_specs(onnx.load(str(path))), None, 8, seed=0, **options)
    return next(iter(probe.batches(8, 8)))


def _hf_positions(mask: np.ndarray) -> np.ndarray:
    """Hugging Face's rule, written out: running count of kept tokens minus one; 1 on padding."""
    positions = np.zeros(mask.shape, np.int64)
    for row in range(mask.shape[0]):
        count = 0
        for column in range(mask.shape[1]):
            count += int(mask[row, column])
            positions[row, column] = count - 1 if mask[row, column] else 1
    return positions


def test_roles_and_the_vocabulary_are_read_from_the_graph(exports):
    specs = {spec.name: spec for spec in input_specs(onnx.load(str(exports("llama", True).path)))}
    assert specs["input_ids"].role == "token_ids" and specs["input_ids"].vocab == lm_exports.VOCAB
    assert (specs["attention_mask"].role, specs["position_ids"].role) == ("attention_mask", "position_ids")
    assert {spec.role for name, spec in specs.items() if name.startswith("past_key_values.")} == {"past"}


def test_synthetic_inputs_of_a_kv_cache_export_are_a_valid_first_step(exports):
    batch = _first_batch(exports("llama", True).path, dims={"sequence_length": 6})
    ids = batch["input_ids"]
    assert ids.shape == (8, 6) and 0 <= ids.min() and ids.max() < lm_exports.VOCAB and len(np.unique(ids)) > 10
    assert batch["attention_mask"].shape == (8, 6) and (batch["attention_mask"] == 1).all()
    np.testing.assert_array_equal(batch["position_ids"], _hf_positions(batch["attention_mask"]))
    pasts = [array for name, array in batch.items() if name.startswith("past_key_values.")]
    assert len(pasts) == 4 and all(array.shape == (8, 2, 0, 8) for array in pasts)  # GQA: 2 key/value heads


def test_a_given_past_length_widens_the_mask_and_shifts_positions(exports):
    batch = _first_batch(exports("llama", True).path, dims={"sequence_length": 4, "past_sequence_length": 3})
    assert batch["attention_mask"].shape == (8, 7) and batch["past_key_values.0.key"].shape == (8, 2, 3, 8)
    np.testing.assert_array_equal(batch["position_ids"], np.tile(np.arange(3, 7), (8, 1)))


def test_int_range_may_narrow_the_vocabulary_but_not_leave_it(exports):
    path = exports("llama", True).path
    assert _first_batch(path, int_range=(5, 9))["input_ids"].min() >= 5
    with pytest.raises(ProbeInputError, match="leaves the vocabulary.*97 rows"):
        _first_batch(path, int_range=(0, 256))


def test_zero_is_a_dimension_only_for_the_past(exports):
    path = exports("llama", True).path
    assert redaudit.ScanSpec(dims={"past_sequence_length": 0}).dims_dict == {"past_sequence_length": 0}
    with pytest.raises(ProbeInputError, match="only a cache .past. length may be empty.*past_sequence_length"):
        _first_batch(path, dims={"sequence_length": 0})
    with pytest.raises(ProbeInputError, match="total_sequence_length=5 disagrees"):
        _first_batch(path, dims={"sequence_length": 4, "total_sequence_length": 5})


def test_the_kv_cache_export_scans_as_the_plain_one(exports):
    """Same weights, same token ids: the same per-layer IRs, so the same similarity (≤ 1e-5)."""
    options = {"samples": 32, "cka_batch": 16, "dims": {"sequence_length": 8}}
    plain = redaudit.scan(str(exports("llama").path), **options)
    cached = redaudit.scan(str(exports("llama", True).path), **options)
    assert [layer.unit for layer in cached.layers] == ["embedding", "decoder layer 0", "decoder layer 1"]
    assert cached.unit == plain.unit == "decoder layer"
    np.testing.assert_allclose(cached.similarity, plain.similarity, atol=1e-5)
    assert abs(cached.msrs - plain.msrs) < 1e-5


def test_real_token_ids_are_completed_and_checked_against_the_vocabulary(exports, tmp_path):
    path = exports("llama", True).path
    specs = input_specs(onnx.load(str(path)))
    ids = np.random.default_rng(0).integers(0, lm_exports.VOCAB, (4, 5))
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    probe = make_probe(specs, {"input_ids": ids, "attention_mask": mask}, 4)
    batch = next(iter(probe.batches(4, 4)))
    np.testing.assert_array_equal(batch["position_ids"], _hf_positions(mask))
    assert batch["past_key_values.1.value"].shape == (4, 2, 0, 8) and probe.real
    with pytest.raises(ProbeInputError, match="token id 97, outside the model's vocabulary.*97 rows"):
        make_probe(specs, {"input_ids": np.full((2, 5), lm_exports.VOCAB)}, 2)
    np.savez(tmp_path / "bad.npz", input_ids=np.full((2, 5), 500))
    result = _cli(["scan", str(path), "--inputs", str(tmp_path / "bad.npz"), "--samples", "2"])
    assert result.exit_code == 2 and "token id 500" in result.output and "Traceback" not in result.output


def _cli(args: list[str]):
    from click.testing import CliRunner

    return CliRunner().invoke(cli, args)


def _raw_taps(path, tensors, feeds):
    import onnxruntime as ort

    model = onnx.load(str(path))
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in tensors)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(tensors, feeds)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_token_pooling_ignores_padding(exports, arch):
    """The pooled IR is the mean over the tokens the mask keeps, against a plain NumPy mean."""
    lm = exports(arch)
    prepared = redaudit.prepare(str(lm.path))
    selection = prepared.taps("block")
    augmented = prepared.augmented(selection, "pool")
    session, _ = prepared.session(augmented)
    ids = np.random.default_rng(4).integers(0, lm_exports.VOCAB, (3, 6))
    mask = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]])
    feeds = {"input_ids": ids, "attention_mask": mask}
    if arch == "llama":
        feeds["position_ids"] = _hf_positions(mask)
    pooled = session.run(augmented.fetch_names, feeds)
    raw = _raw_taps(lm.path, [point.tensor for point in selection.points], feeds)
    for ours, full in zip(pooled, raw, strict=True):
        weights = mask[:, :, None].astype(np.float64)
        expected = (full.astype(np.float64) * weights).sum(axis=1) / weights.sum(axis=1)
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(pooled[1][1], raw[1][1].mean(axis=0), atol=1e-3)  # padding really was left out


def _gqa_model() -> onnx.ModelProto:
    """An onnxruntime-genai-style graph: GroupQueryAttention reads seqlens_k and total_sequence_length."""
    hidden, heads = 8, 2
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
              helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
              helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, [])]
    embed = helper.make_tensor("embed", TensorProto.FLOAT, [16, hidden], np.ones(16 * hidden).tolist())
    nodes = [helper.make_node("Gather", ["embed", "input_ids"], ["x"]),
             helper.make_node("GroupQueryAttention", ["x", "x", "x", "", "", "seqlens_k", "total_sequence_length"],
                              ["y", "present_key", "present_value"], domain="com.microsoft", num_heads=heads,
                              kv_num_heads=heads)]
    graph = helper.make_graph(nodes, "gqa", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", hidden])],
                              [embed])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def test_a_fused_group_query_attention_layout_is_refused_in_one_line(tmp_path):
    path = tmp_path / "gqa.onnx"
    onnx.save(_gqa_model(), str(path))
    result = _cli(["scan", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1
    assert "GroupQueryAttention" in message and "seqlens_k" in message and "total_sequence_length" in message


def test_text_is_tokenized_into_windows_of_the_sequence_length(exports, tmp_path):
    pytest.importorskip("tokenizers")
    from redaudit.core.text import text_arrays

    tokenizer = lm_exports.train_tokenizer(tmp_path / "tok")
    text = tmp_path / "probe.txt"
    text.write_text("the model still predicts the next token and the layer repeats the layer before it. " * 12)
    path = exports("llama", True).path
    specs = input_specs(onnx.load(str(path)))
    arrays = text_arrays(text, str(tmp_path / "tok"), specs, 6, {"sequence_length": 8})
    expected = tokenizer.encode(text.read_text(), add_special_tokens=False).ids
    assert arrays["input_ids"].shape == (6, 8)
    np.testing.assert_array_equal(arrays["input_ids"].ravel(), expected[:48])
    json_path, html_path = tmp_path / "scan.json", tmp_path / "scan.html"
    result = _cli(["scan", str(path), "--text", str(text), "--tokenizer", str(tmp_path / "tok"), "--samples", "8",
                   "--cka-batch", "4", "--dim", "sequence_length=8", "--json", str(json_path), "--html", str(html_path)])
    assert result.exit_code == 0, result.output
    assert "unit: decoder layer" in result.stdout
    assert '<div class="v" id="unit">decoder layer</div>' in html_path.read_text()
    report = json.loads(json_path.read_text())
    assert report["inputs"]["real"] and report["samples"] == 8 and report["unit"] == "decoder layer"
    assert [layer["unit"] for layer in report["layers"]] == ["embedding", "decoder layer 0", "decoder layer 1"]
    with pytest.raises(ConfigError, match="go together"):
        redaudit.ScanSpec(text=str(text))
    missing = _cli(["scan", str(path), "--text", str(text), "--tokenizer", str(tmp_path)])
    assert missing.exit_code == 2 and "no tokenizer.json" in missing.output
    short = tmp_path / "short.txt"
    short.write_text("the layer")
    with pytest.raises(ProbeInputError, match="fewer than one sequence of 8"):
        text_arrays(short, str(tmp_path / "tok"), specs, 6, {"sequence_length": 8})


def test_token_ids_under_any_name_are_found_by_the_embedding_they_index():
    """torch's generated input names: the one integer input that indexes an embedding table."""
    embedding = helper.make_tensor("table", TensorProto.FLOAT, [50, 4], np.zeros(200).tolist())
    nodes = [helper.make_node("Cast", ["onnx::Gather_0"], ["index"], to=TensorProto.INT64),
             helper.make_node("Gather", ["table", "index"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("onnx::Gather_0", TensorProto.INT32, ["N", 5]),
                                           helper.make_tensor_value_info("flags", TensorProto.INT64, ["N", 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 4])], [embedding])
    specs = {spec.name: spec for spec in input_specs(helper.make_model(graph))}
    assert (specs["onnx::Gather_0"].role, specs["onnx::Gather_0"].vocab) == ("token_ids", 50)
    assert specs["flags"].role == ""
    probe = make_probe(list(specs.values()), None, 64)
    assert any("uniform integers" in warning for warning in probe.warnings)  # flags: no role, still warned about
    batch = next(iter(probe.batches(64, 64)))
    assert batch["onnx::Gather_0"].max() < 50 and batch["flags"].max() > 50
