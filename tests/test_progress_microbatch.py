"""Progress moves with every onnxruntime micro-batch, not only with every CKA batch: on a large
model one CKA batch of 256 is many micro-batches and minutes of work, and a bar that sits at 0
for all of them looks hung. Events still reach the callback on the scan's own thread, one at a
time, and ``done`` never goes back."""
from __future__ import annotations

import threading

import pytest

import models
import redaudit
from redaudit.core.memory import estimate_scan_memory
from redaudit.core.spec import ScanSpec

SPEC = ScanSpec(samples=512, cka_batch=256, device="cpu", backend="numpy", max_memory_bytes=40 * 1024**2)


@pytest.fixture
def cnn_path(save_model):
    """~0.8 MB of activations per sample: a 40 MB budget runs a CKA batch of 256 as ~13 micro-batches."""
    return save_model(models.residual_cnn(blocks=3, channels=16, size=32), "cnn.onnx")


@pytest.mark.parametrize("threads", [None, 1])  # lanes where the cores allow, and one batch at a time
def test_batches_progress_counts_every_micro_batch_on_the_scan_thread(cnn_path, threads):
    spec = SPEC.with_options(threads=threads)
    micro = estimate_scan_memory(redaudit.prepare(cnn_path, device="cpu"), spec).run_batch
    assert micro < 256 // 4
    events: list[tuple[int, int | None, int]] = []
    redaudit.scan(cnn_path, spec, progress=lambda e: events.append((e.done, e.total, threading.get_ident()))
                  if e.stage == "batches" else None)
    done = [d for d, _, _ in events]
    assert {t for _, t, _ in events} == {512}
    assert {ident for _, _, ident in events} == {threading.get_ident()}
    assert done[0] == 0 and done[-1] == 512 and done == sorted(set(done))  # from 0 to all, never back
    within_first = [d for d in done if 0 < d < 256]
    assert len(within_first) >= 256 // micro - 1  # the first CKA batch shows its micro-batches
    assert max(b - a for a, b in zip(done, done[1:])) <= micro  # no jump of a whole CKA batch


def test_one_micro_batch_per_cka_batch_reports_once_per_batch(save_model):
    events = []
    redaudit.scan(save_model(models.residual_cnn(blocks=2)), samples=64, cka_batch=16, device="cpu",
                  backend="numpy", progress=lambda e: events.append(e.done) if e.stage == "batches" else None)
    assert events == [0, 16, 32, 48, 64]
