"""A CPU scan runs its NumPy CKA math on one BLAS thread beside onnxruntime, and only while it
streams (core/backend.py has why): the count is restored after, a count the user chose through
the environment is left alone, and a failed scan restores it too."""
from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import redaudit
from redaudit.errors import ScanCancelled
from tests import models

_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads(monkeypatch):
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with threadpool_limits(limits=2, user_api="blas"):
        if not _blas_threads() or min(_blas_threads()) < 2:
            pytest.skip("this BLAS cannot run 2 threads here")
        yield


def _scan_recording_threads(**options) -> tuple[list[list[int]], redaudit.ScanResult]:
    seen: list[list[int]] = []

    def progress(report):
        if report.stage == "batches" and report.done:  # reported after each batch's math
            seen.append(_blas_threads())

    result = redaudit.scan(models.residual_cnn(), samples=64, cka_batch=16, device="cpu", backend="numpy",
                           progress=progress, **options)
    return seen, result


def test_the_cka_math_runs_on_one_blas_thread_while_streaming(two_blas_threads):
    seen, result = _scan_recording_threads()
    assert seen and all(threads == [1] * len(threads) for threads in seen)
    assert min(_blas_threads()) == 2  # restored
    assert np.isfinite(result.similarity).all()


def test_a_count_chosen_in_the_environment_is_left_alone(two_blas_threads, monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    seen, _ = _scan_recording_threads()
    assert seen and all(min(threads) == 2 for threads in seen)


def test_a_cancelled_scan_restores_the_count(two_blas_threads):
    calls = iter(range(100))
    with pytest.raises(ScanCancelled):
        redaudit.scan(models.residual_cnn(), samples=64, cka_batch=16, device="cpu", backend="numpy",
                      cancel=lambda: next(calls) >= 1)
    assert min(_blas_threads()) == 2


def test_scan_sessions_do_not_spin():
    """onnxruntime's idle intra-op threads sleep (core/run.py: they would take the CKA math's core)."""
    from redaudit.core.run import SessionFactory

    session, _ = SessionFactory("cpu").create(models.residual_cnn())
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
