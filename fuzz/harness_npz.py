"""Fuzz the .npz probe-input reader: bytes → file → ``make_probe`` for a 2-input model.

Anything but a :class:`redaudit.errors.RedauditError` escaping is a finding. Run through
``make fuzz`` or ``python fuzz/harness_npz.py CORPUS -max_total_time=60``.
"""
from __future__ import annotations

import os
import sys
import tempfile
import warnings

import atheris
import numpy as np

with atheris.instrument_imports(include=["redaudit"]):
    from redaudit.core.probe import InputSpec, make_probe
    from redaudit.errors import RedauditError

FOLDER = tempfile.mkdtemp(prefix="redaudit-fuzz-npz-")
PATH = os.path.join(FOLDER, "inputs.npz")
SPECS = [InputSpec("x", np.dtype(np.float32), ("N", 8)), InputSpec("ids", np.dtype(np.int64), ("N", 4))]
LIMIT = 256 * 1024**2


def test_one_input(data: bytes) -> None:
    with open(PATH, "wb") as handle:
        handle.write(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            probe = make_probe(SPECS, PATH, samples=64)
            for batch in probe.batches(32, 64):
                assert set(batch) == {"x", "ids"}
        except RedauditError:
            return


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
