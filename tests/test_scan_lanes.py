"""A CPU scan computes several CKA batches at once ("lanes", core/lanes.py has why): each lane
runs a whole batch (inference, then its HSIC) and the scan folds the batches in order, so the
matrix is the one a single lane gives, bit for bit; with one CKA batch of every sample a lane runs
one probe chunk's inference and the chunks are joined in order. Lanes are used only where they are
safe: the CPU, NumPy, a small model, no thread count chosen by the user, a whole CKA batch (or
probe chunk) per onnxruntime run, and a memory budget that holds every lane."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import redaudit
import redaudit.core.engine as engine
import redaudit.core.lanes as lanes_module
import redaudit.core.memory as memory
from redaudit.core.lanes import fit_lanes
from redaudit.core.memory import estimate_scan_memory
from redaudit.core.spec import ScanSpec
from redaudit.errors import ScanCancelled
from tests import models

SPEC = ScanSpec(samples=96, cka_batch=16, device="cpu", backend="numpy", reduce="flatten")
PLENTY = 64 * 1024**3


@pytest.fixture
def three_cores(monkeypatch):
    """This machine seen as 3 usable cores, whatever CI has: 3 lanes of 1 thread each."""
    monkeypatch.setattr(memory, "usable_cores", lambda: 3)


def test_fit_lanes_is_plain_arithmetic():
    parts = {"process": 10**9, "weights": 100, "probe": 40, "features": 999, "gram": 8, "activations": 500}
    lanes, scaled = fit_lanes(parts, None, batches=16, cores=4, per_batch=300, run_live=200)
    assert lanes == 4
    assert scaled == {"process": 10**9, "weights": 100, "probe": 100, "features": 1200, "gram": 32,
                      "activations": 500 + 3 * 200}
    # the most lanes whose parts (the process's own RSS aside) fit the budget
    two = 100 + 60 + 600 + 16 + 700
    assert fit_lanes(parts, two, batches=16, cores=4, per_batch=300, run_live=200)[0] == 2
    assert fit_lanes(parts, two - 1, batches=16, cores=4, per_batch=300, run_live=200) is None
    # never more lanes than cores, batches or MAX_LANES; one lane is the plain pipeline (None)
    assert fit_lanes(parts, None, batches=3, cores=16, per_batch=1, run_live=1)[0] == 3
    assert fit_lanes(parts, None, batches=100, cores=64, per_batch=1, run_live=1)[0] == lanes_module.MAX_LANES
    assert fit_lanes(parts, None, batches=16, cores=1, per_batch=1, run_live=1) is None
    assert fit_lanes(parts, None, batches=1, cores=4, per_batch=1, run_live=1) is None
    # --cka-batch all (per_batch None): a lane adds a run and a probe chunk; the features of the
    # one batch and its Grams are held once, whatever the lane count
    lanes, scaled = fit_lanes(parts, None, batches=16, cores=4, per_batch=None, run_live=200)
    assert lanes == 4 and scaled == {"process": 10**9, "weights": 100, "probe": 100, "features": 999, "gram": 8,
                                     "activations": 500 + 3 * 200}


def test_lanes_only_where_they_are_safe(save_model, three_cores, monkeypatch):
    prepared = redaudit.prepare(save_model(models.residual_cnn(blocks=3)), device="cpu")
    lanes = estimate_scan_memory(prepared, SPEC, available=PLENTY)
    assert (lanes.lanes, lanes.lane_threads) == (3, 1)
    one = estimate_scan_memory(prepared, SPEC.with_options(threads=1), available=PLENTY)
    assert one.lanes == 1 and one.lane_threads is None
    assert lanes.host_bytes > one.host_bytes and lanes.parts["gram"] == 3 * one.parts["gram"]
    # a thread count the user chose, one CKA batch of every sample, onnxruntime on CUDA: one lane
    assert estimate_scan_memory(prepared, SPEC.with_options(threads=3), available=PLENTY).lanes == 1
    assert estimate_scan_memory(prepared, SPEC.with_options(cka_batch=None), available=PLENTY).lanes == 1
    assert estimate_scan_memory(prepared, SPEC, device_runtime=True, available=PLENTY,
                                device_available=lambda: PLENTY).lanes == 1
    # a budget that holds one lane but not two: one lane, and its parts are the single lane's
    tight = SPEC.with_options(max_memory_bytes=one.scan_bytes)
    assert estimate_scan_memory(prepared, tight, available=PLENTY).lanes == 1
    # a large model (weights past memory.LANES_BELOW_WEIGHT_BYTES) keeps the pipeline
    monkeypatch.setattr(memory, "LANES_BELOW_WEIGHT_BYTES", 1)
    assert estimate_scan_memory(prepared, SPEC, available=PLENTY).lanes == 1


@pytest.fixture
def chunks_of_16(monkeypatch):
    """``--cka-batch all`` runs the probe in chunks of 16 samples (64 in use on the CPU): several
    chunks, so several lanes, on a test-sized probe."""
    monkeypatch.setattr(lanes_module, "RUN_CHUNK_CPU", 16)


def test_one_batch_of_every_sample_runs_its_chunks_in_lanes(save_model, three_cores, chunks_of_16):
    prepared = redaudit.prepare(save_model(models.residual_cnn(blocks=3)), device="cpu")
    every = SPEC.with_options(cka_batch=None)
    lanes = estimate_scan_memory(prepared, every, available=PLENTY)
    one = estimate_scan_memory(prepared, every.with_options(threads=1), available=PLENTY)
    assert (lanes.lanes, lanes.lane_threads, one.lanes) == (3, 1, 1)
    assert lanes.parts["features"] == one.parts["features"] and lanes.parts["gram"] == one.parts["gram"]
    assert lanes.parts["activations"] > one.parts["activations"]  # three runs at once
    # a single chunk (the probe fits one onnxruntime call) leaves nothing to share
    assert estimate_scan_memory(prepared, every.with_options(samples=16), available=PLENTY).lanes == 1


#: Hang guard for the barrier below: a wait that long means the lanes never ran together.
HANG_GUARD_S = 600


def _worker_threads_of_hsic(monkeypatch) -> set[int]:
    """Records which threads compute a batch's HSIC. The first two calls wait for each other at a
    barrier: it only opens if two lanes hold a batch at once (not a timing: an event)."""
    seen: set[int] = set()
    original = engine.batch_hsic
    together = threading.Barrier(2)
    calls = []
    lock = threading.Lock()

    def recording(*args, **kwargs):
        with lock:
            calls.append(None)
            first_two = len(calls) <= 2
        if first_two:
            together.wait(timeout=HANG_GUARD_S)
        seen.add(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "batch_hsic", recording)
    return seen


@pytest.mark.parametrize("estimator, aggregate", [("unbiased", "cka"), ("biased", "hsic")])
def test_lanes_give_the_single_lane_matrix_bit_for_bit(save_model, three_cores, monkeypatch, estimator, aggregate):
    path = save_model(models.residual_cnn(blocks=4))
    spec = SPEC.with_options(estimator=estimator, aggregate=aggregate)
    single = redaudit.scan(path, spec.with_options(threads=1))
    threads = _worker_threads_of_hsic(monkeypatch)
    reports = []
    laned = redaudit.scan(path, spec, progress=lambda report: reports.append(report))
    assert len(threads) >= 2 and threading.get_ident() not in threads  # HSIC computed in the lanes
    np.testing.assert_array_equal(laned.similarity, single.similarity)
    np.testing.assert_array_equal(laned.msrs_batches, single.msrs_batches)
    assert laned.msrs == single.msrs and laned.input_hash == single.input_hash
    assert [r.done for r in reports if r.stage == "batches"] == list(range(0, 97, 16))  # in order, every batch


@pytest.mark.parametrize("reduce", ["pool", "flatten"])
def test_chunks_in_lanes_give_the_single_lane_matrix_bit_for_bit(save_model, three_cores, chunks_of_16,
                                                                 monkeypatch, reduce):
    """With one CKA batch of every sample the lanes run only inference; the scan's thread joins
    the chunks in probe order, so the one HSIC sees the same features as with one lane."""
    from redaudit.core import run

    path = save_model(models.residual_cnn(blocks=4))
    spec = SPEC.with_options(cka_batch=None, reduce=reduce)
    single = redaudit.scan(path, spec.with_options(threads=1))
    original, together, calls, lock = run.BatchRunner.run, threading.Barrier(2), [], threading.Lock()
    runners: set[int] = set()

    def recording(self, batch):
        with lock:
            calls.append(None)
            first_two = len(calls) <= 2
        if first_two:  # opens only if two chunks are in onnxruntime at once
            together.wait(timeout=HANG_GUARD_S)
        runners.add(threading.get_ident())
        return original(self, batch)

    monkeypatch.setattr(run.BatchRunner, "run", recording)
    laned = redaudit.scan(path, spec)
    assert len(runners) >= 2 and len(calls) == 96 // 16
    np.testing.assert_array_equal(laned.similarity, single.similarity)
    assert laned.msrs == single.msrs and laned.batches == single.batches == 1


def test_a_cancel_stops_every_lane(save_model, three_cores):
    """The cancel poll runs before every onnxruntime call of every lane: once it says stop, no lane
    starts another run and the scan raises ScanCancelled."""
    path = save_model(models.residual_cnn(blocks=3))
    polls = 0
    calls_after_cancel = 0
    cancelled = threading.Event()

    def cancel() -> bool:
        nonlocal polls, calls_after_cancel
        polls += 1
        if cancelled.is_set():
            calls_after_cancel += 1
        if polls == 4:
            cancelled.set()
        return cancelled.is_set()

    with pytest.raises(ScanCancelled):
        redaudit.scan(path, SPEC.with_options(samples=320), cancel=cancel)
    # the lane told to stop stops the others: only the 2 other lanes, if they were asking at that
    # very moment, and the scan's thread ask once more; the 20 batches' other runs never start
    assert calls_after_cancel <= 3 and polls < 20
