"""Every documented install path ends with exactly one onnxruntime distribution (issue 26, part 1).

onnxruntime and onnxruntime-gpu ship the same import package; with both installed the files of
the wheel unpacked last win. Each path is resolved by pip itself (``--dry-run --report``, so no
CUDA library is downloaded or installed) in a fresh, empty virtual environment; ``make gpu`` is
replayed step by step from the Makefile's own recipe: what step 1 would install, minus what
step 2 uninstalls, plus what step 3 would install.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = {"onnxruntime", "onnxruntime-gpu"}


@pytest.fixture
def fresh_python(tmp_path) -> str:
    """An empty venv's interpreter; pip is the running one's, pointed at it with --python."""
    folder = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(folder)
    return str(folder / "bin" / "python")


def resolve(python: str, *requirements: str, tmp: Path) -> set[str]:
    """The distributions ``pip install REQUIREMENTS`` would install into ``python``'s empty venv."""
    report = tmp / "report.json"
    completed = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--dry-run",
                                "--quiet", "--report", str(report), *requirements],
                               cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}


def gpu_recipe() -> list[list[str]]:
    """The ``gpu`` target's pip commands, as words, with ORT_GPU substituted."""
    text = (ROOT / "Makefile").read_text()
    ort_gpu = re.search(r"^ORT_GPU \?= (.+)$", text, re.M).group(1).strip()
    recipe = re.search(r"^gpu: .*\n((?:\t.*\n)+)", text, re.M).group(1)
    commands = []
    for line in recipe.splitlines():
        words = shlex.split(line.strip().replace("$(ORT_GPU)", ort_gpu))
        if words[0] == "$(BIN)/pip":
            commands.append([word for word in words[1:] if word not in ("-q", "-e", "--no-warn-conflicts")])
    return commands


def test_plain_install_is_the_cpu_build_alone(fresh_python, tmp_path):
    installed = resolve(fresh_python, ".", tmp=tmp_path)
    assert installed & RUNTIMES == {"onnxruntime"}


def test_the_gpu_extra_adds_no_second_runtime(fresh_python, tmp_path):
    installed = resolve(fresh_python, ".[gpu]", tmp=tmp_path)
    assert installed & RUNTIMES == {"onnxruntime"}
    assert {"cupy-cuda13x", "nvidia-cuda-runtime", "nvidia-cudnn-cu13"} <= installed


def test_make_gpu_ends_with_the_cuda_build_alone(fresh_python, tmp_path):
    steps = gpu_recipe()
    assert [step[0] for step in steps] == ["install", "uninstall", "install"], steps
    installed: set[str] = set()
    for index, step in enumerate(steps):
        if step[0] == "install":
            (tmp_path / str(index)).mkdir()
            installed |= resolve(fresh_python, *step[1:], tmp=tmp_path / str(index))
        else:
            assert set(step[1:]) >= {"-y"} | RUNTIMES  # both: after a 2nd run both may be present
            installed -= RUNTIMES
    assert installed & RUNTIMES == {"onnxruntime-gpu"}
    assert {"cupy-cuda13x", "nvidia-cuda-runtime", "nvidia-cudnn-cu13"} <= installed


def test_readme_describes_the_gpu_stack_the_extra_installs():
    """README said `make gpu` "adds CuPy for CUDA 12" while the extra was the CUDA 13 stack."""
    readme = (ROOT / "README.md").read_text()
    line = next(text for text in readme.splitlines() if text.startswith("make gpu"))
    extra = re.search(r'^gpu = \[(.*?)\]', (ROOT / "pyproject.toml").read_text(), re.M | re.S).group(1)
    assert "cupy-cuda13x" in extra and "CUDA 13" in line and "CUDA 12" not in readme
