"""One count of cores for every pool: the CPU affinity, not the machine's core count. A process
pinned to fewer cores (taskset, a cpuset) sizes its lanes, workers and pools to what it has."""
from __future__ import annotations

import os

import redaudit.core.cores as cores
import redaudit.core.memory as memory
from redaudit.service.workers import default_threads


def test_the_affinity_is_what_counts(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert cores.usable_cores() == 3
    assert memory.usable_cores is cores.usable_cores  # the scan's lanes count the same cores
    # service workers: the usable cores but one, shared among the jobs that run at once
    assert (default_threads(1), default_threads(2), default_threads(8)) == (2, 1, 1)


def test_without_an_affinity_the_core_count_serves(monkeypatch):
    def unsupported(pid):
        raise OSError("no affinity here")

    monkeypatch.setattr(os, "sched_getaffinity", unsupported, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert cores.usable_cores() == 6 and default_threads(1) == 5
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert cores.usable_cores() == 1 and default_threads(1) == 1
