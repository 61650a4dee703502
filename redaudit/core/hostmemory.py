"""How much memory this process may still take: the one reading of the machine's free memory.

Shared by the load-time check (can this model's weights fit at all?) and the scan's memory
estimate (core/memory.py), so both judge against the same number.
"""
from __future__ import annotations


def available_bytes() -> int | None:
    """Memory this process may still take: MemAvailable, lowered by a cgroup (container) limit.
    None when the platform says nothing (then nothing is refused)."""
    available: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        try:
            import psutil  # optional: other platforms

            available = int(psutil.virtual_memory().available)
        except Exception:  # noqa: BLE001 - no source of truth: do not refuse
            return None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as limit_file:
            limit = limit_file.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as current_file:
            current = int(current_file.read().strip())
        if limit != "max":
            room = int(limit) - current
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def format_bytes(count: float) -> str:
    """1536 → '1.5 KB' (binary multiples, short units as users read them)."""
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(value) < 1024 or unit == "PB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PB"
