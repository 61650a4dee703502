"""Hostile option values, for every command that takes them: refused before any work, one line."""
from __future__ import annotations

import pytest

from builders import WIDTH, save, tiny_mlp
from conftest import FAST, PENDING_FEEDBACK, PENDING_HISTORY, assert_refused, invoke, snapshot

#: Options shared by scan, check and prune (ScanSpec): each must be refused with one line.
SCAN_OPTIONS = {
    "samples 0": ["--samples", "0"],
    "samples -1": ["--samples", "-1"],
    "samples abc": ["--samples", "abc"],
    "samples 1.5": ["--samples", "1.5"],
    "samples 3e9 (above INTEGER)": ["--samples", "3000000000"],
    "samples 1e20": ["--samples", "99999999999999999999"],
    "seed -5": ["--seed", "-5"],
    "seed 2**64": ["--seed", str(2**64)],
    "seed abc": ["--seed", "abc"],
    "cka-batch 0": ["--cka-batch", "0"],
    "cka-batch 1": ["--cka-batch", "1"],
    "cka-batch 3 (unbiased needs 4)": ["--cka-batch", "3"],
    "cka-batch -32": ["--cka-batch", "-32"],
    "cka-batch abc": ["--cka-batch", "abc"],
    "cka-batch 1e20": ["--cka-batch", "99999999999999999999"],
    "cka-batch above samples": ["--cka-batch", "128"],
    "epsilon nan": ["--epsilon", "nan"],
    "epsilon inf": ["--epsilon", "inf"],
    "epsilon 2": ["--epsilon", "2"],
    "epsilon -1.5": ["--epsilon", "-1.5"],
    "epsilon abc": ["--epsilon", "abc"],
    "beta inf": ["--beta", "inf"],
    "beta nan": ["--beta", "nan"],
    "beta 0": ["--beta", "0"],
    "beta -1": ["--beta", "-1"],
    "int-range 0 1e23": ["--int-range", "0", "99999999999999999999999"],
    "int-range 5 5": ["--int-range", "5", "5"],
    "int-range 10 0": ["--int-range", "10", "0"],
    "int-range a b": ["--int-range", "a", "b"],
    "int-range one value": ["--int-range", "3"],
    "dim h=0": ["--dim", "h=0"],
    "dim h=-1": ["--dim", "h=-1"],
    "dim h=abc": ["--dim", "h=abc"],
    "dim =5": ["--dim", "=5"],
    "dim h": ["--dim", "h"],
    "dim h=1e20": ["--dim", "h=99999999999999999999"],
    "max-model-size inf": ["--max-model-size", "inf"],
    "max-model-size nan": ["--max-model-size", "nan"],
    "max-model-size 0": ["--max-model-size", "0"],
    "max-model-size -1": ["--max-model-size", "-1"],
    "max-model-size abc": ["--max-model-size", "abc"],
    "max-model-size 99999T": ["--max-model-size", "99999T"],
    "max-model-size below model": ["--max-model-size", "1K"],
    "level bogus": ["--level", "bogus"],
    "tap unknown tensor": ["--tap", "no_such_tensor"],
    "tap empty": ["--tap", ""],
    "tap the input": ["--tap", "x"],
    "layout bogus": ["--layout", "a0=bogus"],
    "layout without =": ["--layout", "bogus"],
    "reduce bogus": ["--reduce", "bogus"],
    "estimator bogus": ["--estimator", "bogus"],
    "aggregate bogus": ["--aggregate", "bogus"],
    "device bogus": ["--device", "bogus"],
    "device cuda without GPU": ["--device", "cuda"],
    "backend cupy without CuPy": ["--backend", "cupy"],
    "inputs missing file": ["--inputs", "missing.npz"],
    "inputs is a folder": ["--inputs", "."],
    "unknown option": ["--bogus"],
}

NEEDS_GPU = {"device cuda without GPU", "backend cupy without CuPy"}

COMMANDS = {
    "scan": lambda model: ["scan", model, *FAST, "--quiet", "--json", "out.json"],
    "check": lambda model: ["check", model, *FAST, "--quiet", "--max-msrs", "100"],
    "prune": lambda model: ["prune", model, *FAST, "--remove", "1", "--force", "-o", "p.onnx", "--no-latency"],
}


def _gpu_present(case: str) -> bool:
    if case == "device cuda without GPU":
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    try:
        import cupy  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any failure means no usable CuPy
        return False


def _scan_option_params():
    for command in COMMANDS:
        for case in SCAN_OPTIONS:
            marks = []
            yield pytest.param(case, command, marks=marks, id=f"{case}-{command}")


@pytest.mark.parametrize(("case", "command"), list(_scan_option_params()))
def test_bad_scan_option(workdir, case, command):
    if case in NEEDS_GPU and _gpu_present(case):
        pytest.skip("a GPU is present here: the option is valid")
    model = save(tiny_mlp(), workdir)
    before = snapshot(workdir)
    outcome = invoke(*COMMANDS[command](model), *SCAN_OPTIONS[case])
    assert_refused(outcome)
    assert snapshot(workdir) == before


TAPS_OPTIONS = {"max-model-size inf": ["--max-model-size", "inf"], "max-model-size nan": ["--max-model-size", "nan"],
                "max-model-size 0": ["--max-model-size", "0"], "max-model-size 1K": ["--max-model-size", "1K"],
                "level bogus": ["--level", "bogus"], "no model": []}


@pytest.mark.parametrize("case", list(TAPS_OPTIONS))
def test_bad_taps_option(workdir, case):
    model = save(tiny_mlp(), workdir)
    args = ["taps", model, *TAPS_OPTIONS[case]] if case != "no model" else ["taps"]
    assert_refused(invoke(*args))


PRUNE_OPTIONS = {
    "remove 0": ["--remove", "0"],
    "remove -1": ["--remove", "-1"],
    "remove every block": ["--remove", "99"],
    "target-params nan": ["--target-params", "nan"],
    "target-params -5": ["--target-params", "-5"],
    "target-params 200": ["--target-params", "200"],
    "max-drift nan": ["--max-drift", "nan"],
    "max-drift -1": ["--max-drift", "-1"],
    "blocks unknown": ["--blocks", "no_such_block"],
    "blocks number out of range": ["--blocks", "77"],
    "policy bogus": ["--policy", "bogus"],
    "no selection": [],
}


@pytest.mark.parametrize("case", list(PRUNE_OPTIONS))
def test_bad_prune_option(workdir, case):
    model = save(tiny_mlp(), workdir)
    before = snapshot(workdir)
    outcome = invoke("prune", model, *FAST, "-o", "p.onnx", "--no-latency", "--force", *PRUNE_OPTIONS[case])
    assert_refused(outcome)
    assert snapshot(workdir) == before


@pytest.mark.parametrize("case", ["same path", "relative same path", "hard link", "symlink", "json onto model",
                                  "html onto model", "json and html same path"])
def test_output_onto_input_refused(workdir, case):
    """An output that is the input (or a link to it) is refused before any work."""
    import os

    model = save(tiny_mlp(), workdir)
    if case == "hard link":
        os.link(model, workdir / "link.onnx")
    if case == "symlink":
        os.symlink(model, workdir / "link.onnx")
    args = {"same path": ["prune", model, "--remove", "1", "--force", "-o", model],
            "relative same path": ["prune", model, "--remove", "1", "--force", "-o", "./model.onnx"],
            "hard link": ["prune", model, "--remove", "1", "--force", "-o", "link.onnx"],
            "symlink": ["prune", model, "--remove", "1", "--force", "-o", "link.onnx"],
            "json onto model": ["scan", model, "--json", model],
            "html onto model": ["scan", model, "--html", "./model.onnx"],
            "json and html same path": ["scan", model, "--json", "out", "--html", "out"]}[case]
    before = snapshot(workdir)
    assert_refused(invoke(*args[:2], *FAST, "--no-latency" if args[0] == "prune" else "--quiet", *args[2:]))
    assert snapshot(workdir) == before


CHECK_OPTIONS = {
    "max-msrs nan": (["--max-msrs", "nan"], PENDING_HISTORY),
    "max-increase nan": (["--against", "m", "--max-increase", "nan"], PENDING_HISTORY),
    "no bound": ([], None),
    "against without max-increase": (["--against", "m"], None),
    "max-increase without against": (["--max-increase", "5"], None),
    "against unknown model": (["--against", "never_recorded", "--max-increase", "5"], None),
    "max-msrs abc": (["--max-msrs", "abc"], None),
    "significant alone": (["--significant"], None),
    "significant without against": (["--max-msrs", "100", "--significant"], None),
    "significant with against, no max-increase": (["--against", "m", "--significant"], None),
}


@pytest.mark.parametrize("case", [pytest.param(name, marks=mark) if mark else name
                                  for name, (_, mark) in CHECK_OPTIONS.items()])
def test_bad_check_option(workdir, case):
    model = save(tiny_mlp(), workdir)
    if case == "max-increase nan":
        assert invoke("scan", model, *FAST, "--quiet", "--record", "m").exit_code == 0
    assert_refused(invoke("check", model, *FAST, "--quiet", *CHECK_OPTIONS[case][0]))


@PENDING_HISTORY
def test_check_on_all_degenerate_taps_is_not_ok(workdir):
    """Every tap constant: MSRS is not a number to gate on, so check must not print OK."""
    from builders import _zero_weights

    model = tiny_mlp()
    _zero_weights(model)
    path = save(model, workdir)
    outcome = invoke("check", path, *FAST, "--quiet", "--max-msrs", "100")
    assert not outcome.stdout.startswith("OK"), outcome.stdout
    # a gate that cannot pass fails (exit 1) with one line on stdout saying why (issue 15)
    assert outcome.exit_code == 1 and outcome.exception is None, (outcome.exit_code, outcome.stderr)
    assert outcome.stdout.startswith("FAIL: ") and outcome.stdout.count("\n") == 1


def _conv_with_symbolic_size():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c2"], ["y"])]
    weight2 = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w2")
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            ["N", 1, "height", "width"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "height", "width"])],
                              [weight, weight2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@PENDING_FEEDBACK
@pytest.mark.parametrize("case", ["samples and cka-batch 1e9", "dims 100000 x 100000"])
def test_memory_estimate_refuses(workdir, case):
    """Refused up front with the number and the option that lowers it, not a MemoryError."""
    if case == "samples and cka-batch 1e9":
        path = save(tiny_mlp(), workdir)
        args = ["--samples", "1000000000", "--cka-batch", "1000000000"]
    else:
        path = save(_conv_with_symbolic_size(), workdir)
        args = [*FAST, "--dim", "height=100000", "--dim", "width=100000"]
    outcome = invoke("scan", path, "--quiet", *args)
    assert_refused(outcome)
    assert "--" in outcome.stderr_lines[0]


def test_record_settings_postgres_cannot_store_are_refused_before_work(workdir):
    """--beta inf and --samples 3e9 fail before the scan on every database (ScanSpec)."""
    path = save(tiny_mlp(), workdir)
    for args in (["--beta", "inf"], ["--samples", "3000000000"]):
        outcome = invoke("scan", path, "--quiet", *args, "--record", "m", "--db", f"sqlite:///{workdir}/h.db")
        assert_refused(outcome)
    assert not (workdir / "h.db").exists()


assert WIDTH == 8  # the options above name the tiny MLP's tensors (x, a0)
