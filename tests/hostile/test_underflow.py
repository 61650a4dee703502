"""Issue 22 D: activations that shrink towards zero layer after layer. An 80-layer chain of 16×16
MatMul (weights × 0.05) + Tanh made the deep layers' self-HSIC subnormal or zero: CKA = inf
was listed, counted into MSRS (1702.9) and ``--json`` ended in a traceback. Such a layer is
constant for CKA (its HSIC has no digits left), and no CKA anywhere is outside [−1, 1]."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import onnx
import pytest
from conftest import FAST, invoke, run_process
from onnx import TensorProto, helper, numpy_helper

from redaudit.core.cka import cka_from_hsic


def shrinking_chain(layers: int = 80, width: int = 16, scale: float = 0.05, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, current = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.normal(0, 1, (width, width)) * scale).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"], name=f"mm{i}"),
                  helper.make_node("Tanh", [f"m{i}"], [f"t{i}"], name=f"tanh{i}")]
        current = f"t{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("aggregate", ["cka", "hsic"])
def test_chain_at_layer_level_keeps_cka_in_range(workdir, aggregate):
    (workdir / "chain.onnx").write_bytes(shrinking_chain().SerializeToString())
    result = run_process(["scan", "chain.onnx", "--level", "layer", *FAST, "--aggregate", aggregate, "--quiet",
                          "--json", "out.json"], cwd=workdir)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "RuntimeWarning" not in result.stderr and not re.search(r"\binf\b", result.stdout), result.stderr
    report = json.loads((workdir / "out.json").read_text())
    values = [value for row in report["similarity"] for value in row if value is not None]
    assert values and all(-1.0 <= value <= 1.0 for value in values)
    assert report["msrs"] is None or math.isfinite(report["msrs"])
    assert all(-1.0 <= pair["cka"] <= 1.0 for pair in report["top_pairs"])
    assert "degenerate" in result.stderr  # the underflowed layers are named as left out


def test_table_lists_no_infinite_cka(workdir):
    (workdir / "chain.onnx").write_bytes(shrinking_chain().SerializeToString())
    outcome = invoke("scan", "chain.onnx", "--level", "layer", *FAST)
    assert outcome.exit_code == 0, outcome.stderr
    assert not re.search(r"\binf\b", outcome.stdout), outcome.stdout


def test_subnormal_self_hsic_is_constant_and_products_do_not_underflow():
    """Independent check on a hand-made HSIC matrix: layer 2's self-HSIC is subnormal (NaN row),
    layers 0 and 1 are tiny but normal (their CKA is exactly 0.5, whose naive sqrt(h00·h11)
    underflows to 0 and gave inf)."""
    tiny = 1e-200
    hsic = np.array([[tiny, 0.5 * tiny, 1e-310], [0.5 * tiny, tiny, 1e-310], [1e-310, 1e-310, 1e-310]])
    cka = cka_from_hsic(hsic)
    assert cka[0, 1] == pytest.approx(0.5) and cka[0, 0] == pytest.approx(1.0)
    assert np.isnan(cka[2]).all() and np.isnan(cka[:, 2]).all()


def test_rounding_above_one_is_clipped():
    hsic = np.array([[1.0, 1.0 + 1e-12], [1.0 + 1e-12, 1.0]])
    assert cka_from_hsic(hsic).max() == 1.0
