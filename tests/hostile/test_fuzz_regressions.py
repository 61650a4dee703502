"""Findings of fuzzing (fuzz/harness_*.py), kept as regressions, plus a short deterministic
mutation run of both harnesses over their seed corpora (``make fuzz`` runs the long one)."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from builders import invalid_utf8, tiny_mlp
from redaudit.core.model import load_model, parse_model_bytes
from redaudit.errors import ModelLoadError, RedauditError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("where", ["initializer name", "input name", "node name", "op type", "graph name",
                                   "external location", "external key", "metadata"])
def test_names_that_are_not_utf8_are_refused(tmp_path, where):
    """Finding of fuzzing load_model (issue 10): proto2 string fields accept any bytes, and Python
    then returned them as bytes, which crashed later (AttributeError in the graph index, TypeError
    on an external-data path) or ran with a bytes name."""
    path = invalid_utf8(where)(tmp_path)
    with pytest.raises(ModelLoadError, match="not valid UTF-8"):
        load_model(path)


@pytest.mark.parametrize(("key", "value"), [("offset", "-8"), ("offset", "abc"), ("offset", " 12"), ("offset", "1e3"),
                                            ("offset", "٣"), ("length", "-1"), ("length", "0x10"),
                                            ("offset", str(2**70))])
def test_external_data_numbers_must_be_plain_decimals(tmp_path, key, value):
    """Finding (issue 10): onnx's int() parse raised bare ValueErrors; '٣' (an Arabic-Indic
    digit) passes str.isdigit() and int(), and must still be refused."""
    from builders import external

    path = external(**{key: value})(tmp_path)
    with pytest.raises(ModelLoadError, match=f"external-data {key}"):
        load_model(path)


FUZZ_NPZ_EMPTY_NAME = bytes.fromhex(
    "504b03e2 0350 4b01 0214 0014 0000 0008 0000 0021 0074 0000 00da 0700 0000 9435 7705 0000 0000"
    " 0000 0000 0000 0000 7800 0000 0000 2e6e 7079 504b 0506 0000 0000 0100 0100 3300 0000 fd07 0000 0000")


def test_npz_crash_found_by_fuzzing_is_one_line(tmp_path):
    """The 78-byte archive the .npz fuzzer found (a central-directory entry with an empty name:
    IndexError inside zipfile), and the same built cleanly."""
    from npz_builders import REFUSED_NPZ
    from redaudit.core.npz import read_npz
    from redaudit.errors import ProbeInputError

    path = tmp_path / "crash.npz"
    path.write_bytes(FUZZ_NPZ_EMPTY_NAME)
    with pytest.raises(ProbeInputError):
        read_npz(path, ["x"])
    with pytest.raises(ProbeInputError):
        read_npz(REFUSED_NPZ["member with an empty name (fuzz)"](tmp_path), ["x"])


def test_parse_accepts_only_models():
    with pytest.raises(ModelLoadError):
        parse_model_bytes(b"\x08\x08", "two bytes")
    assert parse_model_bytes(tiny_mlp().SerializeToString(), "tiny").graph.node


def _mutations(seed: bytes, rng: random.Random, count: int):
    for _ in range(count):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 8)):
            if not data:
                break
            choice = rng.random()
            position = rng.randrange(len(data))
            if choice < 0.5:
                data[position] = rng.randrange(256)
            elif choice < 0.7:
                del data[position:position + rng.randint(1, 16)]
            elif choice < 0.9:
                data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            else:
                data[position:position + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x80\x80\x80\x80"])
        yield bytes(data)


@pytest.mark.parametrize("harness", ["model", "npz"])
def test_short_mutation_run_of_the_fuzz_harness(harness, monkeypatch):
    """A few hundred deterministic mutations of the seeds through the same entry points the
    fuzzer drives: anything other than a RedauditError fails the test."""
    pytest.importorskip("atheris")
    sys.path.insert(0, str(ROOT / "fuzz"))
    try:
        seeds_module = __import__("seeds")
        module = __import__(f"harness_{harness}")
    finally:
        sys.path.remove(str(ROOT / "fuzz"))
    seeds = seeds_module.model_seeds() if harness == "model" else seeds_module.npz_seeds()
    rng = random.Random(10)
    chosen = sorted(seeds.items())
    for name, seed in chosen:
        module.test_one_input(seed)
    for name, seed in rng.sample(chosen, min(12, len(chosen))):
        for data in _mutations(seed, rng, 25):
            try:
                module.test_one_input(data)
            except RedauditError:  # pragma: no cover - the harness already swallows these
                pass



def test_input_of_an_unknown_element_type_is_a_user_error():
    """Found by `make fuzz` (model harness, 1.65 M execs): a graph input whose elem_type is not an
    ONNX tensor type (33, 43) passes the checker and raised KeyError in input_specs; the loader's
    callers (taps, prune, the service's upload check) then showed a traceback."""
    import pytest

    from redaudit.core.probe import input_specs
    from redaudit.errors import ProbeInputError
    from tests import models

    model = models.mlp()
    model.graph.input[0].type.tensor_type.elem_type = 43
    with pytest.raises(ProbeInputError, match="element type 43"):
        input_specs(model)


#: Found by `make fuzz` (.npz harness): a stored member whose old-style .npy header ends inside the
#: shape tuple; numpy re-tokenises such headers and raised tokenize.TokenError.
TRUNCATED_HEADER_NPZ = bytes.fromhex(
    "504b03042d000000000000002100205c9fadffffffffffffffff05001400782e6e707901001000840000000000000084"
    "00000000000000934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572"
    "273a2046616c73652c202773010076007b276465736372273a20273c6634272c2027666f727472616e5f6f7264657227"
    "3a2046616c73652c20277368617065273a2028202020202020202020202020202020202020200a0000803f504b01022d"
    "032d000000000000002100205c9f202020202020202020202020202020202020202000800100000000782e6e7079504b"
    "0506000000000100010033000000bb0000000000"
)


def test_npy_header_that_ends_mid_tuple_is_one_line(tmp_path):
    import pytest

    from redaudit.core.npz import read_npz
    from redaudit.errors import ProbeInputError

    path = tmp_path / "crash.npz"
    path.write_bytes(TRUNCATED_HEADER_NPZ)
    with pytest.raises(ProbeInputError):
        read_npz(path, None, rows=64)
