"""Hostile .npz probe inputs against every command that reads them: one line, exit 2."""
from __future__ import annotations

import pytest

from builders import save, tiny_mlp
from npz_builders import ACCEPTED_NPZ, REFUSED_NPZ, zip_bomb
from conftest import FAST, assert_refused, invoke, snapshot

COMMANDS = {
    "scan": lambda model, npz: ["scan", model, "--inputs", npz, *FAST, "--quiet", "--json", "out.json"],
    "check": lambda model, npz: ["check", model, "--inputs", npz, *FAST, "--quiet", "--max-msrs", "100"],
    "prune": lambda model, npz: ["prune", model, "--inputs", npz, *FAST, "--remove", "1", "-o", "p.onnx",
                                 "--no-latency"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(REFUSED_NPZ))
def test_refused_npz(workdir, case, command):
    model = save(tiny_mlp(), workdir)
    npz = REFUSED_NPZ[case](workdir)
    before = snapshot(workdir)
    outcome = invoke(*COMMANDS[command](model, npz))
    assert_refused(outcome)
    assert snapshot(workdir) == before


@pytest.mark.parametrize("command", ["scan", "check"])
@pytest.mark.parametrize("case", list(ACCEPTED_NPZ))
def test_accepted_npz(workdir, case, command):
    """Odd but harmless archives run; a bomb among the arrays is never decompressed (the 3 GiB
    one would take seconds and 3 GiB; the one with a bad CRC would fail if it were read)."""
    model = save(tiny_mlp(), workdir)
    npz = ACCEPTED_NPZ[case](workdir)
    outcome = invoke(*COMMANDS[command](model, npz))
    assert outcome.exception is None and "Traceback" not in outcome.stderr
    if command == "check" and outcome.exit_code == 1:  # all-zero inputs: every layer constant, a failed gate
        assert outcome.stdout.startswith("FAIL: MSRS is undefined"), outcome.stdout
        return
    assert outcome.exit_code == 0, outcome.stderr


def test_reader_reads_only_the_rows_used(tmp_path):
    """Of an input array declared as 1 GiB only the first `rows` samples are decompressed."""
    from redaudit.core.npz import read_npz

    path = tmp_path / "bomb.npz"
    path.write_bytes(zip_bomb(1024**3, as_input=True))
    contents = read_npz(path, ["x"], rows=64)
    assert contents.arrays["x"].shape == (64, 8)
    assert contents.declared_samples["x"] == 1024**3 // 32


def test_reader_never_opens_unwanted_members(tmp_path):
    from redaudit.core.npz import read_npz

    path = tmp_path / "bomb.npz"
    path.write_bytes(zip_bomb(64 * 1024**2, bad_crc=True))
    contents = read_npz(path, ["x"], rows=64)
    assert sorted(contents.names) == ["bomb", "x"] and list(contents.arrays) == ["x"]
    with pytest.raises(Exception):
        read_npz(path, ["bomb"])  # reading it would fail: proof that the scan above never did


def test_reader_matches_numpy(tmp_path):
    """What the reader returns equals np.load's arrays (C, Fortran, big-endian, compressed)."""
    import numpy as np

    from redaudit.core.npz import read_npz

    rng = np.random.default_rng(3)
    arrays = {"c": rng.standard_normal((9, 4, 3)).astype(np.float32),
              "f": np.asfortranarray(rng.standard_normal((5, 6))),
              "b": rng.integers(0, 9, (7, 2)).astype(">i8"), "e": np.zeros((0, 3))}
    for saver in (np.savez, np.savez_compressed):
        path = tmp_path / f"{saver.__name__}.npz"
        saver(path, **arrays)
        contents = read_npz(path)
        for name, array in arrays.items():
            assert contents.arrays[name].dtype == array.dtype
            np.testing.assert_array_equal(contents.arrays[name], array)
