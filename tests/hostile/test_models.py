"""Hostile model files against every command that reads a model: one line, exit 2, nothing written."""
from __future__ import annotations

import pytest

from builders import ODD_MODELS, REFUSED_MODELS
from conftest import FAST, assert_handled, assert_refused, invoke, snapshot

COMMANDS = {
    "scan": lambda path: ["scan", path, *FAST, "--quiet", "--json", "out.json", "--html", "out.html"],
    "taps": lambda path: ["taps", path],
    "prune": lambda path: ["prune", path, *FAST, "--remove", "1", "--force", "-o", "pruned.onnx", "--no-latency"],
    "check": lambda path: ["check", path, *FAST, "--quiet", "--max-msrs", "100"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(REFUSED_MODELS))
def test_refused_model(workdir, case, command):
    path = REFUSED_MODELS[case](workdir)
    before = snapshot(workdir)
    outcome = invoke(*COMMANDS[command](path))
    assert_refused(outcome)
    assert snapshot(workdir) == before


@pytest.mark.parametrize("command", ["scan", "taps", "check"])
@pytest.mark.parametrize("case", list(ODD_MODELS))
def test_odd_model_scans_or_is_refused(workdir, case, command):
    path = ODD_MODELS[case](workdir)
    before = snapshot(workdir)
    args = {"scan": ["scan", path, *FAST, "--quiet", "--json", "out.json"], "taps": ["taps", path],
            "check": ["check", path, *FAST, "--quiet", "--max-msrs", "100"]}[command]
    outcome = invoke(*args)
    if command == "check" and outcome.exit_code == 1:  # a gate that cannot pass fails, in one line
        assert outcome.exception is None and "Traceback" not in outcome.stdout + outcome.stderr
        assert outcome.stdout.startswith("FAIL: ") and outcome.stdout.count("\n") == 1
        return
    assert_handled(outcome)
    if outcome.exit_code != 0:
        assert snapshot(workdir) == before
    elif command == "scan":
        assert (workdir / "out.json").exists()


@pytest.mark.parametrize("batch", [1, 3, 5, 7, 33])
def test_fixed_batch_runs_in_chunks(workdir, batch):
    """A model with a fixed batch runs whatever the CKA batch (chunks that fit), default included."""
    from builders import save, tiny_mlp

    path = save(tiny_mlp(batch=batch), workdir)
    outcome = invoke("scan", path, "--samples", "256", "--quiet")
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stdout.startswith("MSRS ")


def _gather_model():
    """int64 ids into a 10-row embedding through an Abs, which hides the table from the probe's
    vocabulary lookup (a direct Gather is read as token ids and drawn within the table):
    synthetic ids in [0, 256) are out of range."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    embedding = numpy_helper.from_array(np.random.default_rng(0).random((10, 4)).astype(np.float32), "emb")
    nodes = [helper.make_node("Abs", ["ids"], ["index"]), helper.make_node("Gather", ["emb", "index"], ["e"]),
             helper.make_node("Relu", ["e"], ["r"]),
             helper.make_node("Neg", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "gather", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 4])], [embedding])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_int64_model_failing_in_onnxruntime_prints_one_line(workdir):
    """A real process: onnxruntime logs from C++ straight to fd 2, which CliRunner cannot see
    (was: an onnxruntime log line before the error)."""
    from builders import save
    from conftest import run_process

    path = save(_gather_model(), workdir)
    result = run_process(["scan", str(path), *FAST, "--quiet"], cwd=workdir)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "onnxruntime" in lines[0], result.stderr
    fixed = run_process(["scan", str(path), *FAST, "--quiet", "--int-range", "0", "10"], cwd=workdir)
    # it runs; stderr holds only redaudit's own warnings (never an onnxruntime log line)
    assert fixed.returncode == 0 and all(line.startswith("warning: ") for line in fixed.stderr.strip().splitlines()), \
        fixed.stderr
