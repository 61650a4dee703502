"""How many cores this process may use: the one count every thread pool and thread share is
sized from (scan lanes, service workers' onnxruntime threads, the check pool, input hashing).

Why the CPU affinity and not ``os.cpu_count()``: a process pinned by ``taskset`` or a cpuset
(a container's share) sees every core of the machine through ``os.cpu_count()``, and threads
sized from it wait at each parallel operator for cores they were never given.
"""
from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)
