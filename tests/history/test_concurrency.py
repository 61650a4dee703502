"""Many processes recording at once keep every scan exactly once; a killed recorder leaves nothing.

Run on SQLite (a fresh file: schema creation races too) and PostgreSQL, where 8 processes
recording a new model name at once used to lose 2-3 scans to ``duplicate key ...
"uq_models_name"``. Each round every process records under a model name no one has used yet
and under one recorded before the processes started, with files (and labels) shared between
processes, so model, version and label creation all race.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from redaudit.history import model_history, record_scan
from redaudit.history.db import make_engine
from redaudit.history.models import Model, ModelVersion, Scan, ScanLayer, SimilarityMatrix, VersionLabel
from tests.history.conftest import make_result

ROOT = Path(__file__).resolve().parents[2]
PROCESSES, ROUNDS, LAYERS, FILES = 8, 3, 8, 3

WORKER = """
import sys, time
from redaudit.history import record_scan
from tests.history.conftest import make_result
url, worker, rounds, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
time.sleep(max(0.0, start - time.time()))  # all processes begin together
for round_ in range(rounds):
    for name in (f"new-{round_}", "existing"):
        tag = f"file-{(worker + round_) % FILES}"
        scan_id = record_scan(url, make_result(layer_count=LAYERS, file_tag=tag, seed=worker),
                              name, label=f"L-{tag}")
        print(scan_id, flush=True)
""".replace("FILES", str(FILES)).replace("LAYERS", str(LAYERS))


def counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return {table.__tablename__: connection.scalar(select(func.count()).select_from(table))
                    for table in (Model, ModelVersion, VersionLabel, Scan, ScanLayer, SimilarityMatrix)}
    finally:
        engine.dispose()


def test_processes_recording_at_once_keep_every_scan_once(db_url):
    if db_url.startswith("postgresql"):  # a fresh schema, already created: PostgreSQL races on rows
        record_scan(db_url, make_result(layer_count=LAYERS, file_tag="file-0"), "existing", label="L-file-0")
        before = 1
    else:  # a fresh file: the first writers also race to create the schema
        before = 0
    start = time.time() + 4.0  # after every interpreter has imported redaudit
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, db_url, str(worker), str(ROUNDS), str(start)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for worker in range(PROCESSES)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    failures = [err.strip().splitlines()[-1] for (_, err), w in zip(outputs, workers) if w.returncode]
    assert failures == []
    scan_ids = [int(line) for out, _ in outputs for line in out.split()]
    expected = PROCESSES * ROUNDS * 2
    assert len(scan_ids) == len(set(scan_ids)) == expected  # every scan kept, each exactly once
    found = counts(db_url)
    assert found["scans"] == expected + before
    assert found["scan_layers"] == (expected + before) * LAYERS
    assert found["similarity_matrices"] == expected + before
    assert found["models"] == ROUNDS + 1
    # one version (and one label) per distinct file under each model, never a duplicate
    assert found["model_versions"] == found["version_labels"] == FILES * (ROUNDS + 1)
    for name in ("existing", *(f"new-{r}" for r in range(ROUNDS))):
        history = model_history(db_url, name)
        assert sorted(v.label for v in history.versions) == [f"L-file-{k}" for k in range(FILES)]
        assert all(v.aliases == () for v in history.versions)


KILLED = """
import pathlib, sys, time
import redaudit.history.writes as writes
from redaudit.history import record_scan
from tests.history.conftest import make_result
url, marker = sys.argv[1], pathlib.Path(sys.argv[2])

def stall(*args):
    marker.write_text("model, version, scan and layer rows are written, not committed")
    time.sleep(120)

writes.insert_matrix = stall
record_scan(url, make_result(layer_count=40, file_tag="killed"), sys.argv[3], label="killed")
"""


def test_kill_9_while_recording_leaves_no_rows(db_url, tmp_path):
    record_scan(db_url, make_result(file_tag="kept"), "net", label="kept")
    before = counts(db_url)
    for name in ("net", "brand-new"):  # into an existing model, and creating a new one
        marker = tmp_path / f"inside-{name}"
        worker = subprocess.Popen([sys.executable, "-c", KILLED, db_url, str(marker), name], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while not marker.exists() and worker.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), worker.communicate()
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(30)
        assert counts(db_url) == before  # nothing of the killed transaction survives
    # and the database is not left locked: the next recording goes through
    record_scan(db_url, make_result(file_tag="after"), "net", label="after")
    assert [v.label for v in model_history(db_url, "net").versions] == ["kept", "after"]
