"""A cancel (or an interrupt) stops a scan between onnxruntime micro-batches, not only between
CKA batches: with a CKA batch of 256 split into ~13 micro-batches by a small --max-memory, a stop
at micro-batch k must not wait for the rest of the CKA batch (on a large model, minutes).

Deterministic: the onnxruntime calls are counted where BatchRunner makes them, and the stop is
raised at a known count; no sleeps, no timings."""
from __future__ import annotations

import threading

import pytest

import models
import redaudit
from redaudit.core import engine
from redaudit.core.progress import ScanProgress
from redaudit.core.memory import estimate_scan_memory
from redaudit.core.run import BatchRunner
from redaudit.core.spec import ScanSpec
from redaudit.errors import ScanCancelled

SPEC = ScanSpec(samples=512, cka_batch=256, device="cpu", backend="numpy", max_memory_bytes=40 * 1024**2)


@pytest.fixture
def cnn_path(save_model):
    """~0.8 MB of activations per sample: a 40 MB budget runs a CKA batch of 256 as ~13 micro-batches."""
    return save_model(models.residual_cnn(blocks=3, channels=16, size=32), "cnn.onnx")


class CountedRuns:
    """Counts BatchRunner's onnxruntime calls (micro-batches) of the scan; ``hook(count)`` runs
    before each call is counted and made."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hook=lambda count: None) -> None:
        self.count = 0
        original = BatchRunner._call

        def counted(runner: BatchRunner, batch):
            hook(self.count + 1)
            self.count += 1
            return original(runner, batch)
        monkeypatch.setattr(BatchRunner, "_call", counted)


def _micro_batches_per_cka_batch(path: str) -> int:
    micro = estimate_scan_memory(redaudit.prepare(path, device="cpu"), SPEC).run_batch
    return -(-256 // micro)


@pytest.mark.parametrize("stop_at", [1, 2, 5])
def test_cancel_is_polled_per_micro_batch(cnn_path, monkeypatch, stop_at):
    per_batch = _micro_batches_per_cka_batch(cnn_path)
    assert per_batch > stop_at + 2  # the stop lands inside the first CKA batch
    runs = CountedRuns(monkeypatch)
    with pytest.raises(ScanCancelled):
        redaudit.scan(cnn_path, SPEC, cancel=lambda: runs.count >= stop_at)
    assert stop_at <= runs.count <= stop_at + 1 < per_batch


def test_an_error_in_the_scan_stops_the_prefetched_batch(cnn_path, monkeypatch):
    """An interrupt (or any error) raised on the scan's own thread while onnxruntime runs the next
    CKA batch in the worker: the worker stops at its next micro-batch instead of finishing the
    batch nobody will read. If the worker reaches batch 2 before the scan stops, its first run
    waits until the scan has set its stop flag, so the bound holds whatever the thread timing."""
    per_batch = _micro_batches_per_cka_batch(cnn_path)
    stopped = threading.Event()

    class WatchedEvent(threading.Event):
        def set(self) -> None:
            super().set()
            stopped.set()
    monkeypatch.setattr(engine, "Event", WatchedEvent)

    def hold_batch_two(count: int) -> None:
        if count == per_batch + 1:
            assert stopped.wait(timeout=120), "the scan never told its worker to stop"

    runs = CountedRuns(monkeypatch, hold_batch_two)

    class Interrupt(BaseException):
        pass

    def progress(update: ScanProgress) -> None:
        if update.stage == "batches" and update.done == 256:
            raise Interrupt

    with pytest.raises(Interrupt):
        redaudit.scan(cnn_path, SPEC, progress=progress)
    # batch 1, and at most the micro-batch of batch 2 already under way (not all of batch 2)
    assert per_batch <= runs.count <= per_batch + 1
