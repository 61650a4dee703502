"""Recording and reading scans, on SQLite and PostgreSQL."""
from __future__ import annotations

import math

import numpy as np
import pytest

from redaudit.history import (LabelInUseError, UnknownReferenceError, load_scan, model_history,
                              record_scan, resolve_scan)
from tests.history.conftest import make_result


def test_record_and_load_round_trip(db_url):
    result = make_result(copies=[(1, 2), (3, 4)], file_tag="v1")
    scan_id = record_scan(db_url, result, "resnet-prod", label="v1")
    stored = load_scan(db_url, scan_id)
    assert stored.model_name == "resnet-prod"
    assert stored.version.sha256 == result.model.sha256
    assert stored.version.label == "v1"
    assert stored.version.parameter_count == result.model.parameter_count
    assert stored.summary.msrs == pytest.approx(result.msrs)
    assert stored.summary.layer_count == 6
    assert stored.layer_order == tuple(result.layer_names)
    # the matrix comes back as float32 in the same order
    assert stored.similarity.dtype == np.float32
    np.testing.assert_allclose(stored.similarity, result.similarity, atol=1e-7)
    # per-layer rows: redundancy and most similar layer as ScanResult computes them
    redundancy = result.layer_redundancy()
    assert [layer.name for layer in stored.layers] == result.layer_names
    assert stored.layers[1].most_similar == result.layer_names[2]
    assert stored.layers[1].most_similar_cka == pytest.approx(0.99)
    assert stored.layers[3].redundancy == pytest.approx(redundancy[3])
    assert stored.layers[0].issue == "constant output"
    # every setting is kept
    assert stored.settings["samples"] == 512 and stored.settings["epsilon"] == 0.8
    assert stored.settings["inputs_real"] is False and stored.settings["input_hash"] == "ab" * 32


def test_same_file_adds_scan_to_same_version(db_url):
    first = record_scan(db_url, make_result(file_tag="v1"), "net", label="v1")
    second = record_scan(db_url, make_result(copies=[(0, 1)], file_tag="v2"), "net", label="v2")
    third = record_scan(db_url, make_result(file_tag="v1", seed=3), "net")
    history = model_history(db_url, "net")
    assert [v.label for v in history.versions] == ["v1", "v2"]
    assert [s.scan_id for s in history.versions[0].scans] == [first, third]
    assert [s.scan_id for s in history.versions[1].scans] == [second]


def test_label_cannot_name_two_versions(db_url):
    record_scan(db_url, make_result(file_tag="a"), "net", label="v1")
    with pytest.raises(LabelInUseError, match="already names version"):
        record_scan(db_url, make_result(file_tag="b"), "net", label="v1")
    # an unchanged file rescanned under a new tag keeps its version label; the scan gets the tag
    scan_id = record_scan(db_url, make_result(file_tag="a"), "net", label="v1.1")
    assert resolve_scan(db_url, "net", "v1.1") == scan_id
    assert model_history(db_url, "net").versions[0].label == "v1"


def test_parent_links_pruned_version(db_url):
    original = make_result(file_tag="orig")
    record_scan(db_url, original, "net", label="full")
    record_scan(db_url, make_result(file_tag="pruned"), "net-pruned",
                parent_sha256=original.model.sha256)
    history = model_history(db_url, "net-pruned")
    assert history.versions[0].parent_sha256 == original.model.sha256
    with pytest.raises(UnknownReferenceError, match="record the original model first"):
        record_scan(db_url, make_result(file_tag="x"), "net", parent_sha256="f" * 64)


def test_nan_msrs_is_stored_as_missing(db_url):
    result = make_result(file_tag="nan")
    result.msrs = float("nan")
    result.msrs_std = float("nan")
    stored = load_scan(db_url, record_scan(db_url, result, "net"))
    assert stored.summary.msrs is None and stored.summary.log2_msrs is None


def test_resolve_references(db_url):
    a = make_result(file_tag="a")
    b = make_result(file_tag="b")
    s1 = record_scan(db_url, a, "net", label="v1")
    s2 = record_scan(db_url, b, "net", label="v2")
    s3 = record_scan(db_url, a, "net")
    assert resolve_scan(db_url, "net", "v2") == s2
    assert resolve_scan(db_url, "net", "v1") == s3  # a version means its latest scan
    assert resolve_scan(db_url, "net", a.model.sha256[:8]) == s3
    assert resolve_scan(db_url, "net", f"scan:{s1}") == s1
    assert resolve_scan(db_url, "net", f"#{s2}") == s2
    with pytest.raises(UnknownReferenceError, match="matches no label"):
        resolve_scan(db_url, "net", "nope")
    with pytest.raises(UnknownReferenceError, match="no model named 'other'"):
        model_history(db_url, "other")


def test_history_is_chronological_with_log2(db_url):
    for index, tag in enumerate(["a", "b", "c"]):
        record_scan(db_url, make_result(copies=[(0, k) for k in range(1, index + 2)], file_tag=tag),
                    "net", label=tag)
    scans = [scan for _, scan in model_history(db_url, "net").scans()]
    assert [round(s.msrs) for s in scans] == [1, 2, 3]
    assert scans[1].log2_msrs == pytest.approx(math.log2(scans[1].msrs))


@pytest.mark.parametrize("overrides", [{"beta": float("inf")}, {"cka_batch": 2**40}])
def test_values_one_database_cannot_store_are_refused_by_both(db_url, overrides):
    """SQLite stored these and PostgreSQL failed at commit; both now refuse them up front: the
    ScanSpec at the edge, and the store itself for a result whose config went around it."""
    from redaudit.errors import ConfigError
    from redaudit.history import HistoryError

    with pytest.raises(ConfigError):
        make_result(file_tag="x", **overrides)
    result = make_result(file_tag="x")
    for key, value in overrides.items():
        object.__setattr__(result.config, key, value)  # a forged result, as a buggy caller could build
    with pytest.raises(HistoryError, match="finite|does not fit"):
        record_scan(db_url, result, "net")
    with pytest.raises(HistoryError, match="no redaudit history yet"):
        model_history(db_url, "net")  # refused before the database was touched
