"""`redaudit doctor` names what a GPU scan would need, one line each, and always exits 0."""
from __future__ import annotations

import onnxruntime as ort

from redaudit.cli.main import cli
from redaudit.core.doctor import hint_for


def test_doctor_reports_the_cpu_only_build_with_the_install_line(runner):
    result = runner.invoke(cli, ["doctor"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("ok   onnxruntime distribution: onnxruntime") and lines[0].endswith(" is active")
    assert lines[1].startswith("ok   onnxruntime: ")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert any(line.startswith("MISS cuda provider") and "redaudit[gpu]" in line for line in lines)
        assert lines[-1].startswith("GPU scans: not available here")


def test_missing_cuda_libraries_map_to_the_package_that_brings_them():
    assert "nvidia-cublas" in hint_for("libcublasLt.so.13")
    assert "cudnn" in hint_for("libcudnn.so.9")
    assert "driver" in hint_for("libcuda.so.1")


def test_doctor_names_the_active_distribution_and_refuses_two():
    from redaudit.core.doctor import runtime_check

    cpu = runtime_check({"onnxruntime": "1.32.0"}, "1.32.0")
    assert cpu.ok and cpu.detail == "onnxruntime 1.32.0 (the CPU build) is active"
    gpu = runtime_check({"onnxruntime-gpu": "1.31.1"}, "1.31.1")
    assert gpu.ok and gpu.detail == "onnxruntime-gpu 1.31.1 (the CUDA build) is active"
    both = runtime_check({"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"}, "1.32.0")
    assert not both.ok and "both installed" in both.detail and "reports 1.32.0" in both.detail
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in both.hint
    none = runtime_check({}, None)
    assert not none.ok and "neither" in none.detail
