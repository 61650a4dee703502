"""``prune --record`` stores how the pruned version compares with its parent (revision 0004)."""
from __future__ import annotations

from redaudit.history import record_pruned
from redaudit.history.store import HistoryStore
from tests.history.conftest import make_result

VERIFIED = {"policy": "bi", "heal": "linear", "removed": ["layers.3", "layers.5"], "probe_real": True,
            "drift": 0.031, "top1_agreement": 0.93, "kl_mean": 0.052, "perplexity_original": 41.5,
            "perplexity_pruned": 45.2}


def test_verification_is_stored_beside_the_pruned_scan(db_url):
    original, pruned = make_result(file_tag="full"), make_result(layer_count=4, file_tag="pruned")
    recorded = record_pruned(db_url, original, pruned, "lm", label="pruned-2", verification=VERIFIED)
    store = HistoryStore(db_url)
    try:
        row = store.prune_verification(recorded.scan_id)
        assert row is not None and row["scan_id"] == recorded.scan_id
        assert {key: row[key] for key in VERIFIED} == VERIFIED
        assert store.prune_verification(recorded.original_scan_id) is None
    finally:
        store.close()


def test_a_prune_without_lm_figures_stores_nulls(db_url):
    original, pruned = make_result(file_tag="a"), make_result(layer_count=3, file_tag="b")
    plain = {**VERIFIED, "kl_mean": None, "perplexity_original": None, "perplexity_pruned": None}
    recorded = record_pruned(db_url, original, pruned, "cnn", verification=plain)
    store = HistoryStore(db_url)
    try:
        assert store.prune_verification(recorded.scan_id)["kl_mean"] is None
    finally:
        store.close()
