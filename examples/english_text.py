"""Real English prose from the installed Python packages, picked deterministically.

Two sources that every environment with our dependencies has: the long descriptions (READMEs) in
the ``*.dist-info/METADATA`` files, and the docstrings of the packages' modules, classes and
functions. Only prose survives the filter (no code, tables, headings, lists, parameter lines or
markup). Files are read in sorted order and picks are spread evenly over everything found, so a
given environment always yields the same text.

``english_sentences`` returns single sentences (README text only, as the MiniLM pruning benchmark
has always used). ``english_passages`` returns runs of consecutive sentences from one source that
are at least ``min_words`` words long: cut to a fixed token length they fill the whole sequence,
so a transformer probed with them sees no padding at all (see :mod:`examples.minilm_export`).
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import numpy as np

_WORD = re.compile(r"^[A-Za-z][A-Za-z'’-]*[,;:]?$")
#: Docstrings read per top-level package: enough to spread the sample over many packages
#: without parsing every file of the largest ones (torch alone ships thousands).
_FILES_PER_PACKAGE = 40


def site_packages() -> Path:
    return Path(next(p for p in sys.path if p.endswith("site-packages")))


def candidate_sentences(text: str) -> list[str]:
    """Sentences of 6–40 words, capitalised, ending in '.', at least 90 % plain words."""
    lines = text.splitlines()
    # A line followed by an RST underline (----, ====) is a section heading, not prose.
    underlined = {i for i in range(len(lines) - 1) if re.fullmatch(r"\s*([-=~^])\1{2,}\s*", lines[i + 1])}
    prose = [line.strip() for i, line in enumerate(lines)
             if line.strip() and i not in underlined
             and not line.startswith((" ", "\t", "#", "|", "*", "-", ">", "=", "`", "."))
             and ":" not in line[:20]]
    text = " ".join(prose)
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        words = sentence.rstrip(".!?").split()
        if not 6 <= len(words) <= 40 or not sentence[:1].isupper() or not sentence.endswith("."):
            continue
        if sum(bool(_WORD.match(word)) for word in words) < 0.9 * len(words):
            continue
        out.append(sentence)
    return out


def _readmes(root: Path) -> list[str]:
    return [metadata.read_text(encoding="utf-8", errors="ignore").partition("\n\n")[2]
            for metadata in sorted(root.glob("*.dist-info/METADATA"))]


def file_docstrings(path: Path) -> list[str]:
    """The docstrings of one source file (module, classes, functions) in walk order; none when it
    does not parse. Shared by the demo's passages and the LM corpus (examples/lm_corpus.py)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
    except (SyntaxError, ValueError, OSError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return [doc for node in ast.walk(tree) if isinstance(node, kinds) and (doc := ast.get_docstring(node, clean=True))]


def _docstrings(root: Path) -> list[str]:
    texts = []
    for package in sorted(p for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
        for path in sorted(package.rglob("*.py"))[:_FILES_PER_PACKAGE]:
            texts.extend(file_docstrings(path))
    return texts


def _spread(items: list[str], count: int) -> list[str]:
    if len(items) <= count:
        return items
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in picks]


def english_sentences(count: int = 400, root: Path | None = None) -> list[str]:
    """Up to ``count`` distinct English sentences from installed packages' READMEs."""
    seen: set[str] = set()
    sentences: list[str] = []
    for body in _readmes(root or site_packages()):
        for sentence in candidate_sentences(body):
            if sentence not in seen:
                seen.add(sentence)
                sentences.append(sentence)
    return _spread(sentences, count)


def english_passages(count: int, min_words: int, root: Path | None = None) -> list[str]:
    """Up to ``count`` distinct passages of ≥ ``min_words`` words: consecutive prose sentences of
    one README or docstring, never spanning two sources, never overlapping one another."""
    root = root or site_packages()
    seen: set[str] = set()
    passages: list[str] = []
    for text in [*_readmes(root), *_docstrings(root)]:
        current: list[str] = []
        for sentence in candidate_sentences(text):
            current.append(sentence)
            passage = " ".join(current)
            if len(passage.split()) >= min_words:
                if passage not in seen:
                    seen.add(passage)
                    passages.append(passage)
                current = []
    return _spread(passages, count)
