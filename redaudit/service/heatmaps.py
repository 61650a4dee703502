"""The heatmap PNG of a recorded scan, drawn once per scan and kept (a bounded LRU).

Drawing takes matplotlib 125-230 ms per scan page while every other page takes 3-10 ms; a
recorded scan's matrix never changes, so its picture is a function of the scan. The key holds
the scan's id *and* its version hash and recording time, so a history rebuilt under a running
service (ids reused) cannot show another scan's picture.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

#: Pictures kept: a scan page's PNG is 30-300 KB, so at most ~40 MB.
CACHED_SCANS = 128


class HeatmapCache:
    def __init__(self, size: int = CACHED_SCANS) -> None:
        self.size = size
        self.hits = self.misses = 0
        self._pictures: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def png(self, scan) -> bytes:
        """The heatmap of ``scan`` (a :class:`~redaudit.history.records.StoredScan`): the picture
        ``GET /scans/{id}/heatmap.png`` returns and the scan page shows inline."""
        key = (scan.scan_id, scan.version.sha256, scan.summary.created_at)
        with self._lock:
            if key in self._pictures:
                self.hits += 1
                self._pictures.move_to_end(key)
                return self._pictures[key]
            self.misses += 1
        from redaudit.report.heatmap import heatmap_png_bytes

        png = heatmap_png_bytes(scan.similarity, list(scan.layer_order), f"{scan.model_name} scan {scan.scan_id}")
        with self._lock:
            self._pictures[key] = png
            while len(self._pictures) > self.size:
                self._pictures.popitem(last=False)
        return png
