"""Real English for the tiny language model, grouped by installed package and split BY PACKAGE.

The text is the prose of the installed packages' READMEs (``*.dist-info/METADATA``) and of their
modules', classes' and functions' docstrings (read with ``ast``, never imported), filtered to plain
sentences by :func:`examples.english_text.candidate_sentences`. Each top-level name (a README's
distribution and the import packages its RECORD installs share one key: ``attrs`` owns ``attr``)
belongs to exactly one split, so no package's wording reaches evaluation through training or calibration:

* ``train``: the language model learns from it;
* ``calibration``: pruning policies score layers and healing fits its maps on it;
* ``evaluation``: the pruned model is judged on it.

Packages are assigned by their position in sorted order (every 10th from 0 → evaluation, every
10th from 5 → calibration), so an environment always yields the same split.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from examples.english_text import candidate_sentences, file_docstrings, site_packages

#: Docstring files read per package: enough text (~400 k training tokens, more than the LM sees)
#: without parsing thousands of files of the big packages (torch, scipy) on shared cores.
FILES_PER_PACKAGE = 60
SPLITS = ("train", "calibration", "evaluation")


@dataclass(frozen=True)
class Corpus:
    """Sentences per split, each a tuple of (package, sentence) pairs in reading order."""

    train: tuple[tuple[str, str], ...]
    calibration: tuple[tuple[str, str], ...]
    evaluation: tuple[tuple[str, str], ...]

    def text(self, split: str) -> str:
        """The split's sentences, one package's run after another, a newline between packages."""
        lines: list[str] = []
        previous = None
        for package, sentence in getattr(self, split):
            if package != previous and lines:
                lines.append("\n")
            lines.append(sentence + " ")
            previous = package
        return "".join(lines).replace(" \n", "\n").strip()

    def packages(self, split: str) -> list[str]:
        return sorted({package for package, _ in getattr(self, split)})


def distribution_key(dist_info: Path) -> str:
    """``SQLAlchemy-2.0.36.dist-info`` → ``sqlalchemy``."""
    return dist_info.name.split("-")[0].lower().replace(".", "_")


def distribution_of_packages(root: Path) -> dict[str, str]:
    """Import name → distribution key, from each distribution's RECORD (``attr`` → ``attrs``,
    ``dateutil`` → ``python_dateutil``), so a package's README and docstrings share one split."""
    owner: dict[str, str] = {}
    for record in sorted(root.glob("*.dist-info/RECORD")):
        for line in record.read_text(encoding="utf-8", errors="ignore").splitlines():
            top = line.split(",")[0].split("/")[0]
            if top and "." not in top and not top.startswith("__"):
                owner.setdefault(top, distribution_key(record.parent))
    return owner


def _readme_texts(root: Path) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    for metadata in sorted(root.glob("*.dist-info/METADATA")):
        body = metadata.read_text(encoding="utf-8", errors="ignore").partition("\n\n")[2]
        texts.setdefault(distribution_key(metadata.parent), []).append(body)
    return texts


def _docstring_texts(root: Path) -> dict[str, list[str]]:
    owner = distribution_of_packages(root)
    texts: dict[str, list[str]] = {}
    for package in sorted(p for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
        sources = [p for p in sorted(package.rglob("*.py")) if "tests" not in p.parts]
        for path in sources[:FILES_PER_PACKAGE]:
            docs = file_docstrings(path)
            if docs:
                texts.setdefault(owner.get(package.name, package.name.lower()), []).extend(docs)
    return texts


def split_of(index: int) -> str:
    """The split of the package at ``index`` in sorted order."""
    return {0: "evaluation", 5: "calibration"}.get(index % 10, "train")


def gather(root: Path | None = None) -> Corpus:
    """Every distinct prose sentence of the installed packages, split by package (see module doc)."""
    root = root or site_packages()
    readmes, docstrings = _readme_texts(root), _docstring_texts(root)
    seen: set[str] = set()
    split: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLITS}
    for index, package in enumerate(sorted(set(readmes) | set(docstrings))):
        for text in [*readmes.get(package, []), *docstrings.get(package, [])]:
            for sentence in candidate_sentences(text):
                if sentence not in seen:
                    seen.add(sentence)
                    split[split_of(index)].append((package, sentence))
    return Corpus(**{name: tuple(pairs) for name, pairs in split.items()})
