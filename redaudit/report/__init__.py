"""Renderers of a ScanResult: ``json_report`` (strict JSON, schema 1, and its reader),
``heatmap`` (PNG via matplotlib's Agg canvas) and ``html`` (one self-contained page).

Import the submodule you need; this package does not import matplotlib eagerly so that
reading a JSON report stays cheap.
"""
from __future__ import annotations
