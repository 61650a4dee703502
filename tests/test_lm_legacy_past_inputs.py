"""Real probe inputs for a decoder exported with the legacy GPT-2 cache layout (``past_N`` of
shape (2, batch, heads, past, head_dim)): a past given in ``--inputs`` samples-first, a past
given in the graph's own layout refused with the swap that fixes it, the one shape where the two
layouts cannot be told apart said out loud, and ``--text`` measuring what the no-cache export
measures."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from redaudit.cli.main import cli
from redaudit.core.probe import input_specs, make_probe
from redaudit.core.run import session_feed
from redaudit.errors import ProbeInputError

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
import lm_exports  # after the skips: it needs torch and transformers
import onnxruntime as ort

pytestmark = pytest.mark.torch

LAYERS, HEADS, HEAD_DIM = 2, 4, 8
PREFIX, STEP = 3, 4  # tokens run first (their presents are the past), then tokens fed with that past


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """(no-cache export, legacy 5-D past export) of one random-weight GPT-2."""
    return lm_exports.export_gpt2_legacy(tmp_path_factory.mktemp("gpt2_legacy_inputs"), layers=LAYERS,
                                         heads=HEADS, hidden=HEADS * HEAD_DIM)


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _two_steps(path, count: int, seed: int = 0):
    """Token ids of ``count`` samples: the model run on the first PREFIX (empty past) gives the
    presents, in the graph's layout (2, count, heads, PREFIX, head_dim); returns (all ids,
    the inputs of the second step with those presents as its pasts, graph layout)."""
    ids = np.random.default_rng(seed).integers(1, lm_exports.VOCAB, (count, PREFIX + STEP)).astype(np.int32)
    session = _session(path)
    empty = {f"past_{n}": np.zeros((2, count, HEADS, 0, HEAD_DIM), np.float32) for n in range(LAYERS)}
    first = {"input_ids": ids[:, :PREFIX], "position_ids": np.tile(np.arange(PREFIX, dtype=np.int32), (count, 1)),
             "attention_mask": np.ones((count, PREFIX), np.int32), **empty}
    outputs = dict(zip([out.name for out in session.get_outputs()], session.run(None, first)))
    second = {"input_ids": ids[:, PREFIX:],
              "position_ids": np.tile(np.arange(PREFIX, PREFIX + STEP, dtype=np.int32), (count, 1)),
              "attention_mask": np.ones((count, PREFIX + STEP), np.int32)}
    second.update({f"past_{n}": outputs[f"present_{n}"] for n in range(LAYERS)})
    return ids, second


def _samples_first(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.swapaxes(array, 0, 1) if name.startswith("past_") else array for name, array in arrays.items()}


def test_a_past_given_samples_first_continues_the_sequence(gpt2):
    """The documented layout, (N, 2, heads, past, head_dim): the second step's logits equal the
    no-cache model's on the whole sequence — np.swapaxes(a, 0, 1) of the model's own presents is
    the right fix to advise."""
    plain, cached = gpt2
    ids, second = _two_steps(cached.path, 5)
    probe = make_probe(input_specs(onnx.load(str(cached.path))), _samples_first(second), 5)
    assert not probe.warnings
    batch = next(iter(probe.batches(5, 5)))
    logits = _session(cached.path).run(["logits"], session_feed(_session(cached.path), batch))[0]
    whole = {"input_ids": ids, "position_ids": np.tile(np.arange(PREFIX + STEP, dtype=np.int32), (5, 1)),
             "attention_mask": np.ones_like(ids)}
    expected = _session(plain.path).run(["logits"], whole)[0][:, PREFIX:]
    np.testing.assert_allclose(logits, expected, atol=1e-5)


@pytest.mark.parametrize("source", ["file", "dict", "file, fewer --samples"])
def test_a_past_in_the_graphs_layout_is_refused_with_the_swap_that_fixes_it(gpt2, tmp_path, source):
    """(2, N, heads, past, head_dim) with N ≠ 2 — the model's own present_N as it comes out —
    is refused in one line that names the layout and the fix, from a file (where the samples
    already disagree when the arrays are read) and from in-memory arrays."""
    _, cached = gpt2
    _, second = _two_steps(cached.path, 6)
    specs = input_specs(onnx.load(str(cached.path)))
    samples = 4 if "fewer" in source else 6
    inputs: object = second
    if source != "dict":
        inputs = tmp_path / "second.npz"
        np.savez(inputs, **second)
    with pytest.raises(ProbeInputError) as raised:
        make_probe(specs, inputs, samples)
    message = str(raised.value)
    assert "'past_0'" in message and "(2, 6, 4, 3, 8)" in message and "\n" not in message
    assert "graph's layout" in message and "np.swapaxes(a, 0, 1)" in message and "samples first" in message
    if source == "dict":
        return
    outcome = CliRunner().invoke(cli, ["scan", str(cached.path), "--inputs", str(inputs), "--samples", str(samples),
                                       "--cka-batch", "4"])
    assert outcome.exit_code == 2, outcome.output
    assert "np.swapaxes(a, 0, 1)" in outcome.output and "Traceback" not in outcome.output
    assert len(outcome.output.strip().splitlines()) == 1


def test_two_samples_cannot_tell_the_layouts_apart_and_say_so(gpt2, tmp_path):
    """N = 2: (2, 2, heads, past, head_dim) is a valid past in either layout, and nothing sound
    tells them apart (the keys and values of a past the model emitted are any floats; the
    present the model returns repeats either reading). It is read samples-first, as documented,
    with a warning naming the other reading and its fix — never silently."""
    _, cached = gpt2
    _, second = _two_steps(cached.path, 2)
    specs = input_specs(onnx.load(str(cached.path)))
    for arrays in (second, _samples_first(second)):
        probe = make_probe(specs, arrays, 2)
        warning = [line for line in probe.warnings if "past_0" in line]
        assert len(warning) == 1 and "cannot tell" in warning[0] and "np.swapaxes(a, 0, 1)" in warning[0]
        assert len(probe.warnings) == 1  # one warning for all the pasts, not one per layer
    np.savez(tmp_path / "two.npz", **second)
    outcome = CliRunner().invoke(cli, ["scan", str(cached.path), "--inputs", str(tmp_path / "two.npz"),
                                       "--cka-batch", "2", "--estimator", "biased"])
    assert outcome.exit_code == 0, outcome.output
    assert "cannot tell" in outcome.output
    empty = dict(second, **{f"past_{n}": np.zeros((2, 2, HEADS, 0, HEAD_DIM), np.float32) for n in range(LAYERS)},
                 attention_mask=np.ones((2, STEP), np.int32))
    assert not make_probe(specs, empty, 2).warnings  # an empty past reads the same either way
    symmetric = dict(second, **{f"past_{n}": np.ones((2, 2, HEADS, PREFIX, HEAD_DIM), np.float32)
                                for n in range(LAYERS)})
    assert not make_probe(specs, symmetric, 2).warnings  # so does one whose swap is itself


def test_text_probes_the_legacy_export_as_the_no_cache_one(gpt2, tmp_path):
    """--text FILE --tokenizer DIR on the legacy export: the windows are completed with a stacked
    empty past, and the per-layer CKA equals the no-cache export's on the same text."""
    pytest.importorskip("tokenizers")
    plain, cached = gpt2
    lm_exports.train_tokenizer(tmp_path / "tok")
    text = tmp_path / "probe.txt"
    text.write_text("the model still predicts the next token and the layer repeats the layer before it. "
                    "perplexity measures how surprised a language model is by held out text. " * 12)
    reports = []
    for path in (plain.path, cached.path):
        report = tmp_path / f"{path.stem}.json"
        outcome = CliRunner().invoke(cli, ["scan", str(path), "--text", str(text), "--tokenizer", str(tmp_path / "tok"),
                                           "--samples", "16", "--cka-batch", "8", "--dim", "seq_len=8",
                                           "--json", str(report)])
        assert outcome.exit_code == 0, outcome.output
        reports.append(json.loads(report.read_text()))
    plain_report, cached_report = reports
    assert cached_report["inputs"]["real"] and plain_report["inputs"]["real"]
    assert cached_report["samples"] == plain_report["samples"] == 16
    units = [layer["unit"] for layer in cached_report["layers"]]
    assert units == [layer["unit"] for layer in plain_report["layers"]] == \
        ["embedding"] + [f"decoder layer {n}" for n in range(LAYERS)]
    similarity = np.array(cached_report["similarity"])
    np.testing.assert_allclose(similarity, np.array(plain_report["similarity"]), atol=1e-6, rtol=0)
    assert similarity.min() < 0.999  # the layers differ: equal matrices are not trivially all ones
