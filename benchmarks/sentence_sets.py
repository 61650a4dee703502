"""Two disjoint sets of real English sentences, from different installed packages' documentation:
one to calibrate healing on, one to evaluate on. Two ways to split (``disjoint_sets(source=…)``):

* ``"readme"`` (the benchmark's default): README sentences (METADATA long descriptions) of
  every other installed package in sorted order calibrate, those of the packages in between
  evaluate. Same kind of text on both sides, no package on both.
* ``"docstrings"``: calibration = docstrings of the modules, classes and functions of a fixed
  list of packages (read with ``ast``, never imported); evaluation = READMEs of every *other*
  package (the sentences ``examples.english_text.english_sentences`` uses). A shift in the kind
  of text between calibration and deployment, kept to measure what that costs.

No package contributes to both, and a sentence that occurs in both sets is dropped from the
evaluation set. Files are read in sorted order, so an environment always yields the same sets.
"""
from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import numpy as np

from examples.english_text import candidate_sentences as _candidate_sentences

#: Packages whose docstrings calibrate; their READMEs are excluded from evaluation.
CALIBRATION_PACKAGES = ("sklearn", "scipy", "sqlalchemy", "alembic", "click", "optuna", "hypothesis")


def _site_packages() -> Path:
    return Path(next(p for p in sys.path if p.endswith("site-packages")))


def _distribution_key(name: str) -> str:
    return name.lower().replace("-", "_").split("_")[0]


def docstring_sentences(packages: tuple[str, ...] = CALIBRATION_PACKAGES, limit: int = 4000) -> list[str]:
    """Distinct sentences from the docstrings of ``packages`` (spread evenly if over ``limit``)."""
    root = _site_packages()
    seen: set[str] = set()
    sentences: list[str] = []
    for package in packages:
        for source in sorted((root / package).rglob("*.py")):
            if "tests" in source.parts:
                continue
            try:
                tree = ast.parse(source.read_text(encoding="utf-8", errors="ignore"))
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                doc = ast.get_docstring(node, clean=False)
                if not doc:
                    continue
                for sentence in _candidate_sentences(inspect.cleandoc(doc)):
                    if sentence not in seen:
                        seen.add(sentence)
                        sentences.append(sentence)
    return _spread(sentences, limit)


def readme_sentences(exclude: tuple[str, ...] = CALIBRATION_PACKAGES, limit: int = 400) -> list[str]:
    """Distinct sentences from the READMEs of installed packages not in ``exclude``."""
    by_package = readme_sentences_by_package(exclude)
    return _spread([sentence for sentences in by_package.values() for sentence in sentences], limit)


def readme_sentences_by_package(exclude: tuple[str, ...] = CALIBRATION_PACKAGES) -> dict[str, list[str]]:
    """Distinct README sentences per installed distribution (sorted), ``exclude`` left out."""
    excluded = {_distribution_key(name) for name in exclude} | {"scikit"}
    seen: set[str] = set()
    by_package: dict[str, list[str]] = {}
    for metadata in sorted(_site_packages().glob("*.dist-info/METADATA")):
        key = _distribution_key(metadata.parent.name)
        if key in excluded:
            continue
        body = metadata.read_text(encoding="utf-8", errors="ignore").partition("\n\n")[2]
        for sentence in _candidate_sentences(body):
            if sentence not in seen:
                seen.add(sentence)
                by_package.setdefault(key, []).append(sentence)
    return by_package


def _spread(sentences: list[str], limit: int) -> list[str]:
    if len(sentences) <= limit:
        return sentences
    return [sentences[i] for i in np.linspace(0, len(sentences) - 1, limit).round().astype(int)]


def disjoint_sets(calibration: int = 512, evaluation: int = 300,
                  source: str = "docstrings") -> tuple[list[str], list[str]]:
    """(calibration sentences, evaluation sentences), disjoint by package and by sentence; at
    most ``calibration`` / ``evaluation`` of each, spread evenly over what there is."""
    if source == "readme":
        by_package = readme_sentences_by_package()
        names = sorted(by_package)
        calib = [s for name in names[0::2] for s in by_package[name]]
        taken = set(calib)
        held_out = [s for name in names[1::2] for s in by_package[name] if s not in taken]
        return _spread(calib, calibration), _spread(held_out, evaluation)
    if source != "docstrings":
        raise ValueError(f"source must be 'readme' or 'docstrings', got {source!r}")
    calib = docstring_sentences(limit=calibration)
    taken = set(calib)
    evaluate = [s for s in readme_sentences(limit=evaluation + 50) if s not in taken][:evaluation]
    return calib, evaluate
