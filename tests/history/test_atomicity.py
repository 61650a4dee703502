"""A failed recording leaves no rows; concurrent recorders into one SQLite file both succeed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

import redaudit.history.writes as writes
from redaudit.history import make_engine, model_history, record_scan
from redaudit.history.models import Model, ModelVersion, Scan, ScanLayer, SimilarityMatrix
from tests.history.conftest import make_result

ROOT = Path(__file__).resolve().parents[2]


def _counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return {table.__tablename__: connection.scalar(select(func.count()).select_from(table))
                    for table in (Model, ModelVersion, Scan, ScanLayer, SimilarityMatrix)}
    finally:
        engine.dispose()


def test_failure_midway_leaves_no_rows(db_url, monkeypatch):
    def fail_after_layers(session, scan_id, layer_order, npy):
        # the model, version, scan and every layer row were flushed before this point
        assert session.scalar(select(func.count()).select_from(ScanLayer)) == 6
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(writes, "insert_matrix", fail_after_layers)
    with pytest.raises(RuntimeError, match="injected"):
        record_scan(db_url, make_result(file_tag="v1"), "net", label="v1")
    assert set(_counts(db_url).values()) == {0}


def test_failure_on_existing_model_keeps_only_earlier_scan(db_url, monkeypatch):
    record_scan(db_url, make_result(file_tag="v1"), "net", label="v1")
    monkeypatch.setattr(writes, "insert_matrix", lambda *args: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        record_scan(db_url, make_result(file_tag="v2"), "net", label="v2")
    assert _counts(db_url) == {"models": 1, "model_versions": 1, "scans": 1, "scan_layers": 6,
                               "similarity_matrices": 1}


WORKER = """
import sys
from redaudit.history import record_scan
from tests.history.conftest import make_result
url, tag = sys.argv[1], sys.argv[2]
for index in range(8):
    record_scan(url, make_result(layer_count=40, file_tag=f"{tag}-{index % 2}", seed=index), "shared")
"""


def test_two_processes_record_into_one_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"  # fresh file: the schema creation races too
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, tag], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for tag in ("a", "b")]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    history = model_history(url, "shared")
    assert len(history.versions) == 4
    assert len(history.scans()) == 16
    assert _counts(url)["scan_layers"] == 16 * 40


def test_connecting_waits_while_another_process_creates_a_new_file(tmp_path):
    """The cause of the two-process flake, made deterministic.

    On a brand-new file, switching to WAL is a write; while another connection holds the write
    lock (it is creating the schema), SQLite answers that switch with "database is locked" at
    once, without the busy handler. Connecting must wait for the other writer instead.
    """
    import sqlite3
    import threading
    import time

    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE being_created (x)")  # rollback-journal mode: the file is new
    released = threading.Event()

    def commit_later() -> None:
        time.sleep(0.5)
        other.execute("COMMIT")
        released.set()

    threading.Thread(target=commit_later).start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            assert released.is_set()  # it waited for the other writer rather than failing
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()
        released.wait(5)
        other.close()


def test_record_pruned_is_one_transaction(db_url, monkeypatch):
    """The original (unknown to the history) and the pruned child are committed together: a
    failure while writing the child leaves neither (prune --record used two transactions and
    could leave a parentless or childless version behind)."""
    from redaudit.history import record_pruned

    original, pruned = make_result(file_tag="full"), make_result(layer_count=4, file_tag="pruned")
    calls = []
    real_insert_matrix = writes.insert_matrix

    def fail_on_child(session, scan_id, layer_order, npy):
        calls.append(scan_id)
        if len(calls) == 2:  # the original's rows are flushed; now the child's
            raise RuntimeError("disk full while recording the child (injected)")
        real_insert_matrix(session, scan_id, layer_order, npy)

    monkeypatch.setattr(writes, "insert_matrix", fail_on_child)
    with pytest.raises(RuntimeError, match="injected"):
        record_pruned(db_url, original, pruned, "net", label="pruned")
    assert set(_counts(db_url).values()) == {0}
    monkeypatch.setattr(writes, "insert_matrix", real_insert_matrix)
    recorded = record_pruned(db_url, original, pruned, "net", label="pruned")
    assert recorded.original_scan_id is not None and recorded.version_status == "new"
    versions = model_history(db_url, "net").versions
    assert [(v.sha256, v.parent_sha256) for v in versions] == [
        (original.model.sha256, None), (pruned.model.sha256, original.model.sha256)]
    # the original known already: only the child is recorded
    again = record_pruned(db_url, original, make_result(layer_count=3, file_tag="pruned-2"), "net")
    assert again.original_scan_id is None
    assert len(model_history(db_url, "net").scans()) == 3
