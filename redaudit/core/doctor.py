"""What this machine can run: onnxruntime's providers, the CUDA libraries they need, CuPy.

``--device cuda`` fails in ways that are hard to read: onnxruntime-gpu loads its CUDA provider
lazily, and a missing ``libcublasLt.so.13`` shows up as a silent fallback to CPU or a long log.
The doctor names the missing library and the package that brings it, in one line each.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

#: Library name prefix → what to install (onnxruntime-gpu 1.31 is built for CUDA 13).
_LIBRARY_HINTS = {
    "libcudart": "pip install 'onnxruntime-gpu[cuda]' (nvidia-cuda-runtime)",
    "libcublas": "pip install 'onnxruntime-gpu[cuda]' (nvidia-cublas)",
    "libcufft": "pip install 'onnxruntime-gpu[cuda]' (nvidia-cufft)",
    "libcurand": "pip install 'onnxruntime-gpu[cuda]' (nvidia-curand)",
    "libcudnn": "pip install 'onnxruntime-gpu[cudnn]' (nvidia-cudnn)",
    "libnvrtc": "pip install 'onnxruntime-gpu[cuda]' (nvidia-cuda-nvrtc)",
    "libcuda.so": "install the NVIDIA driver (libcuda comes with it, not from pip)",
}
#: The GPU install: the extra brings CuPy and the CUDA libraries, then the GPU build of onnxruntime
#: replaces the CPU one (an extra cannot remove a base dependency; pyproject.toml, [gpu]).
GPU_INSTALL = ("make gpu, or: pip install 'redaudit[gpu]' && pip uninstall -y onnxruntime onnxruntime-gpu "
               "&& pip install onnxruntime-gpu")
#: The distributions that ship the ``onnxruntime`` import package, and what each build is.
RUNTIME_DISTRIBUTIONS = {"onnxruntime": "the CPU build", "onnxruntime-gpu": "the CUDA build"}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def cuda_ready(self) -> bool:
        checks = [check for check in self.checks if check.name.startswith("cuda")]
        return any(check.name == "cuda provider" for check in checks) and all(check.ok for check in checks)


def hint_for(library: str) -> str:
    for prefix, hint in _LIBRARY_HINTS.items():
        if library.startswith(prefix):
            return hint
    return GPU_INSTALL


def missing_libraries(shared_object: Path) -> list[str]:
    """Libraries ``shared_object`` needs that the loader cannot find (from ``ldd``)."""
    if shutil.which("ldd") is None or not shared_object.exists():
        return []
    completed = subprocess.run(["ldd", str(shared_object)], capture_output=True, text=True, timeout=30)
    return [line.split("=>")[0].strip() for line in completed.stdout.splitlines() if "not found" in line]


def _cuda_provider_library() -> Path | None:
    import onnxruntime as ort

    folder = Path(ort.__file__).parent / "capi"
    found = sorted(folder.glob("libonnxruntime_providers_cuda.so*"))
    return found[0] if found else None


def installed_runtimes() -> dict[str, str]:
    """The installed distributions of :data:`RUNTIME_DISTRIBUTIONS`, name → version
    (``importlib.metadata``: what pip installed, whatever the import currently loads)."""
    from importlib import metadata

    found = {}
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def runtime_check(installed: dict[str, str], imported_version: str | None) -> Check:
    """Exactly one onnxruntime distribution, named with its build; two share one import package
    (the files of the wheel unpacked last win, so the build in use is a matter of order)."""
    if not installed:
        return Check("onnxruntime distribution", False, "neither onnxruntime nor onnxruntime-gpu is installed",
                     "pip install onnxruntime (CPU), or for a GPU: " + GPU_INSTALL)
    listed = " and ".join(f"{name} {version}" for name, version in installed.items())
    if len(installed) == 1:
        name = next(iter(installed))
        return Check("onnxruntime distribution", True, f"{listed} ({RUNTIME_DISTRIBUTIONS[name]}) is active")
    return Check("onnxruntime distribution", False,
                 f"{listed} are both installed and share the `onnxruntime` package: the files of the one "
                 f"installed last win (the import reports {imported_version or 'nothing'})",
                 "pip uninstall -y onnxruntime onnxruntime-gpu, then install one: pip install onnxruntime "
                 "(CPU) or pip install onnxruntime-gpu (GPU)")


def diagnose() -> DoctorReport:
    """Check the onnxruntime distribution, its CUDA provider and its libraries, and CuPy; never raises."""
    report = DoctorReport()
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    report.checks.append(runtime_check(installed_runtimes(), getattr(ort, "__version__", None)))
    if ort is None:
        report.checks.append(Check("onnxruntime", False, "not importable", "pip install onnxruntime"))
        report.checks.append(_cupy_check())
        return report
    providers = ort.get_available_providers()
    report.checks.append(Check("onnxruntime", True, f"{ort.__version__}, providers: {', '.join(providers)}"))
    if "CUDAExecutionProvider" not in providers:
        report.checks.append(Check("cuda provider", False, "this onnxruntime build has no CUDAExecutionProvider",
                                   GPU_INSTALL))
    else:
        if hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()
            except Exception:  # noqa: BLE001 - preloading is best effort; ldd below names what is missing
                pass
        library = _cuda_provider_library()
        missing = missing_libraries(library) if library else []
        for name in missing:
            report.checks.append(Check(f"cuda library {name}", False, "not found by the loader", hint_for(name)))
        if not missing:
            report.checks.append(Check("cuda provider", True, "CUDA provider library and its dependencies load"))
        try:
            ctypes.CDLL("libcuda.so.1")
            report.checks.append(Check("cuda driver", True, "libcuda.so.1 loads"))
        except OSError:
            report.checks.append(Check("cuda driver", False, "libcuda.so.1 not found", hint_for("libcuda.so")))
    report.checks.append(_cupy_check())
    return report


def _cupy_check() -> Check:
    try:
        import cupy  # type: ignore[import-not-found]
    except Exception as error:  # noqa: BLE001
        return Check("cupy", False, f"not importable ({type(error).__name__})",
                     "pip install cupy-cuda13x (CuPy computes the CKA on the GPU; NumPy is used otherwise)")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        version = cupy.cuda.runtime.runtimeGetVersion()
    except Exception as error:  # noqa: BLE001
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return Check("cupy", False, f"{cupy.__version__} cannot use the GPU: {first}",
                     "match CuPy to the CUDA major version (cupy-cuda13x for onnxruntime-gpu 1.31)")
    return Check("cupy", count > 0, f"{cupy.__version__}, CUDA runtime {version}, {count} device(s)")
