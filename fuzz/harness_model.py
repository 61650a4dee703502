"""Fuzz the model loader: bytes → file → ``load_model`` → input specs → graph index → taps.

Anything but a :class:`redaudit.errors.RedauditError` escaping is a finding (a traceback a
user would see). Run through ``make fuzz`` or ``python fuzz/harness_model.py CORPUS -max_total_time=60``.
The model is written next to a small ``weights.bin`` so that external-data references resolve.
"""
from __future__ import annotations

import os
import sys
import tempfile
import warnings

import atheris

with atheris.instrument_imports(include=["redaudit"]):
    from redaudit.core.graph import GraphIndex
    from redaudit.core.model import load_model, parse_model_bytes
    from redaudit.core.probe import input_specs
    from redaudit.core.tap import select_taps
    from redaudit.errors import RedauditError

FOLDER = tempfile.mkdtemp(prefix="redaudit-fuzz-model-")
MODEL = os.path.join(FOLDER, "model.onnx")
with open(os.path.join(FOLDER, "weights.bin"), "wb") as handle:
    handle.write(bytes(range(256)) * 4)


def test_one_input(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be a second stderr line: count it as a finding
        try:
            parse_model_bytes(data, "fuzz")
        except RedauditError:
            return
        with open(MODEL, "wb") as handle:
            handle.write(data)
        try:
            loaded = load_model(MODEL, max_bytes=64 * 1024**2)
            input_specs(loaded.proto)
            index = GraphIndex.build(loaded.proto)
            for level in ("block", "layer", "op"):
                select_taps(index, level)
        except RedauditError:
            return


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
