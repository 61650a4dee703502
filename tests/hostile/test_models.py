"""Hostile model files against every command that reads a model: one line, exit 2, nothing written."""
from __future__ import annotations

import pytest

from builders import ODD_MODELS, REFUSED_MODELS
from conftest import FAST, assert_handled, assert_refused, invoke, snapshot

COMMANDS = {
    "scan": lambda path: ["scan", path, *FAST, "--quiet", "--json", "out.json", "--html", "out.html"],
    "taps": lambda path: ["taps", path],
    "prune": lambda path: ["prune", path, *FAST, "--remove", "1", "-o", "pruned.onnx", "--no-latency"],
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
