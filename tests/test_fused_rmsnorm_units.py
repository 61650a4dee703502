"""A LLaMA-style decoder (RMSNorm, pre-norm) optimized by onnxruntime's transformer optimizer: each
residual sum fused with the next RMSNorm into ``com.microsoft.SkipSimplifiedLayerNormalization``
and the first layer's norm into ``SimplifiedLayerNormalization`` — an onnxruntime op in the ONNX
domain, which the ONNX checker has no schema for. A tiny LlamaForCausalLM (random weights) is
exported, optimized in the test, and compared with its unfused export: loaded, the same units,
the same IRs, the same CKA matrix, and prune refused as for any fused pre-norm model.

``model_type="gpt2"`` is what onnxruntime's own LLaMA exporter passes
(``onnxruntime/transformers/models/llama/convert_to_onnx.py``); every model type built on
``BertOnnxModel`` (bert, gpt2, gpt_neox, qwen3) fuses RMSNorm the same way in onnxruntime 1.32:
1 SimplifiedLayerNormalization and 2 per layer SkipSimplifiedLayerNormalization.

Tolerances: the fused kernels compute the same float32 sums and norms in another order, so the
IRs differ by rounding only: measured at most 9.3e-9 (block and sublayer) on hidden states up to
0.097 (LLaMA's 0.02 init), i.e. ~1 ulp; asserted within 1e-6, 100x that and still 1e-5 of the
values, so a wrong tensor (the norm's output 0 instead of the sum: O(1) off) cannot pass. The CKA
matrices (24 samples, CKA batch 12) differ by 1.3e-8 (block) and 1.4e-8 (sublayer), asserted
within 1e-6 as for the fused GPT-2/BERT, on a matrix whose entries go down to 0.50."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from redaudit.core.prepared import PreparedModel
from redaudit.core.units import find_units

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
optimizer = pytest.importorskip("onnxruntime.transformers.optimizer")
import lm_exports  # after the skips: it needs torch and transformers

pytestmark = pytest.mark.torch

LAYERS = 3


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(unfused TinyLM, path of its optimized twin)."""
    folder = tmp_path_factory.mktemp("fused_rmsnorm")
    lm = lm_exports.export(folder / "llama.onnx", "llama", layers=LAYERS)
    fused = optimizer.optimize_model(str(lm.path), model_type="gpt2", num_heads=4, hidden_size=32, opt_level=0)
    path = folder / "llama_fused.onnx"
    fused.save_model_to_file(str(path))
    return lm, path


def _feeds(count: int, length: int, seed: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seed).integers(0, lm_exports.VOCAB, (count, length))
    return {"input_ids": ids, "attention_mask": np.ones_like(ids),
            "position_ids": np.tile(np.arange(length), (count, 1))}


def _tapped(prepared: PreparedModel, level: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    selection = prepared.taps(level)
    augmented = prepared.augmented(selection, "flatten")
    session, _ = prepared.session(augmented)
    return session.run(augmented.fetch_names, feeds)


def _ops(path) -> list[onnx.NodeProto]:
    return list(onnx.load(str(path)).graph.node)


def test_the_optimizer_fused_every_rmsnorm(llama):
    _, fused = llama
    nodes = _ops(fused)
    skip = [node for node in nodes if node.op_type == "SkipSimplifiedLayerNormalization"]
    plain = [node for node in nodes if node.op_type == "SimplifiedLayerNormalization"]
    assert len(skip) == 2 * LAYERS and {node.domain for node in skip} == {"com.microsoft"}
    assert len(plain) == 1 and plain[0].domain == ""  # onnxruntime's op in the ONNX domain
    assert not any(node.op_type in ("Pow", "ReduceMean", "Sqrt") for node in nodes)


def test_the_fused_model_loads_though_the_checker_has_no_schema_for_its_first_norm(llama):
    """onnx's checker rejects SimplifiedLayerNormalization ("No Op registered … domain_version of
    17"); onnxruntime runs it. Only that op's schema check is skipped: anything else wrong in the
    graph is still refused."""
    from redaudit.core.model import load_model
    from redaudit.errors import ModelLoadError

    _, fused = llama
    with pytest.raises(onnx.checker.ValidationError, match="SimplifiedLayerNormalization"):
        onnx.checker.check_model(onnx.load(str(fused)))
    original = onnx.load(str(fused))
    loaded = load_model(fused).proto
    assert [node.domain for node in loaded.graph.node] == [node.domain for node in original.graph.node]
    assert list(loaded.opset_import) == list(original.opset_import)  # the checker's view is undone
    external = fused.parent / "external" / "llama_fused.onnx"
    external.parent.mkdir()
    onnx.save(original, str(external), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert load_model(external).proto.graph.node  # external weights: checked as stand-ins, not by path
    broken = onnx.load(str(fused))
    broken.graph.node[0].input[0] = "no such tensor"
    onnx.save(broken, str(fused.parent / "broken.onnx"))
    with pytest.raises(ModelLoadError, match="checker"):
        load_model(fused.parent / "broken.onnx")


def test_one_unit_per_decoder_layer_on_the_fused_graph_as_on_the_unfused(llama):
    lm, fused = llama
    layouts = [find_units(PreparedModel.load(path).index) for path in (lm.path, fused)]
    for layout in layouts:
        assert len(layout.units) == LAYERS
        assert all(unit.is_transformer_layer and len(unit.sublayers) == 2 for unit in layout.units)
        assert (layout.kind, layout.norm) == ("decoder layer", "pre")
    for level, count in (("block", 1 + LAYERS), ("sublayer", 1 + 2 * LAYERS)):
        selections = [PreparedModel.load(path).taps(level) for path in (lm.path, fused)]
        assert [len(selection.points) for selection in selections] == [count, count]
        assert [p.unit for p in selections[0].points] == [p.unit for p in selections[1].points]
        assert not selections[1].warnings


@pytest.mark.parametrize("level", ["block", "sublayer"])
def test_fused_irs_equal_the_unfused(llama, level):
    lm, fused = llama
    feeds = _feeds(3, 7, seed=1)
    ours = _tapped(PreparedModel.load(fused), level, feeds)
    theirs = _tapped(PreparedModel.load(lm.path), level, feeds)
    assert len(ours) == len(theirs) == (1 + LAYERS if level == "block" else 1 + 2 * LAYERS)
    for number, (fused_ir, plain_ir) in enumerate(zip(ours, theirs, strict=True)):
        np.testing.assert_allclose(fused_ir, plain_ir, atol=1e-6, rtol=0, err_msg=f"IR {number}")


def test_the_similarity_matrix_of_the_fused_llama_is_the_unfused_one(llama):
    import redaudit

    lm, fused = llama
    feeds = _feeds(24, 8, seed=3)
    results = [redaudit.scan(str(path), inputs=feeds, samples=24, cka_batch=12, device="cpu")
               for path in (lm.path, fused)]
    assert [len(result.layers) for result in results] == [1 + LAYERS] * 2
    assert results[1].unit == results[0].unit == "decoder layer"
    np.testing.assert_allclose(results[1].similarity, results[0].similarity, atol=1e-6, rtol=0)
    assert results[0].similarity.min() < 0.9  # the layers differ: not a matrix of ones either way
    synthetic = redaudit.scan(str(fused), samples=16, cka_batch=8)  # token ids within the fused vocabulary
    assert np.isfinite(synthetic.similarity).all() and len(synthetic.layers) == 1 + LAYERS


def test_prune_refuses_the_fused_llama_in_one_line(llama):
    from click.testing import CliRunner

    from redaudit.cli.main import cli

    _, fused = llama
    outcome = CliRunner().invoke(cli, ["prune", str(fused), "--remove", "1", "--no-latency"])
    assert outcome.exit_code == 2, outcome.output
    assert "SkipSimplifiedLayerNormalization" in outcome.output and "before optimization" in outcome.output
    assert "Traceback" not in outcome.output and len(outcome.output.strip().splitlines()) == 1


def test_typing_a_fused_graph_does_not_import_torch(llama):
    """onnxruntime's symbolic shape inference types the contrib ops' outputs; importing it as
    ``onnxruntime.tools.symbolic_shape_infer`` ran onnxruntime/tools/__init__.py, which imports
    torch whenever it is installed: 1.0 s of the 1.2 s a fused graph's load cost (sympy 0.2 s, the
    inference 0.06 s). In a fresh process, loading the fused model types every tap without it."""
    import os
    import subprocess
    import sys

    _, fused = llama
    script = ("import sys\nfrom redaudit.core.prepared import PreparedModel\n"
              f"prepared = PreparedModel.load({str(fused)!r})\n"
              "print(len(prepared.taps('sublayer').points), 'torch' in sys.modules, 'sympy' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(1 + 2 * LAYERS), "False", "True"]  # typed by the inference, without torch
