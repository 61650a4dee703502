"""Redundancy-aware neural architecture search (RedTest's first application).

space ─▶ train (torch, optional extra) ─▶ export ONNX ─▶ redaudit.scan ─▶ objective ─▶ Optuna
study in the history database ─▶ select / report / export. Import the submodules directly;
this package imports nothing heavy so ``redaudit`` stays light without the ``nas`` extra.
"""
from __future__ import annotations
