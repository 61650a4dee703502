"""The benchmark's calibration and evaluation sentences never share a package or a sentence."""
from __future__ import annotations

import pytest

from benchmarks.sentence_sets import disjoint_sets, readme_sentences_by_package


def test_readme_split_is_disjoint_by_package_and_by_sentence():
    by_package = readme_sentences_by_package()
    owner = {sentence: package for package, sentences in by_package.items() for sentence in sentences}
    calibration, evaluation = disjoint_sets(10**6, 10**6, source="readme")
    assert len(calibration) > 50 and len(evaluation) > 50
    assert not set(calibration) & set(evaluation)
    assert not {owner[s] for s in calibration} & {owner[s] for s in evaluation}
    few, _ = disjoint_sets(20, 10, source="readme")
    assert len(few) == 20 and set(few) <= set(calibration)


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="source"):
        disjoint_sets(source="tweets")
