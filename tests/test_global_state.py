"""The library leaves process-wide state alone: matplotlib's backend, warning filters, Optuna's
log level. Checked in a fresh interpreter that imports and uses the library."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CODE = r"""
import warnings, matplotlib
matplotlib.use("svg")
filters = list(warnings.filters)
import optuna
level = optuna.logging.get_verbosity()
import redaudit, redaudit.prune, redaudit.history, redaudit.report.heatmap, redaudit.report.html
import redaudit.nas.report, redaudit.nas.storage, redaudit.history.render
from tests import models
result = redaudit.scan(models.residual_cnn(blocks=2), samples=64, cka_batch=32)
import tempfile, os
with tempfile.TemporaryDirectory() as folder:
    redaudit.report.heatmap.write_heatmap(result, os.path.join(folder, "h.png"))
    redaudit.nas.storage.require_optuna()
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert warnings.filters == filters, "warning filters changed"
assert optuna.logging.get_verbosity() == level, "optuna verbosity changed"
print("ok")
"""


def test_library_leaves_global_state_alone():
    completed = subprocess.run([sys.executable, "-c", CODE], cwd=Path(__file__).parents[1],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().endswith("ok")


NAS_CODE = r"""
import torch
from redaudit.nas.data import load_dataset
from redaudit.nas.space import Architecture
from redaudit.nas.train import train_candidate
for onednn in (True, False):
    torch.backends.mkldnn.enabled = onednn
    train_candidate(Architecture("cnn", (1,), 4, 3, False), load_dataset(None), epochs=1, seed=0, threads=None)
    assert torch.backends.mkldnn.enabled == onednn, "oneDNN switch changed"
print("ok")
"""


def test_nas_training_restores_the_onednn_switch():
    """Training turns oneDNN off (its convolution backward corrupts the heap on some AMD EPYC
    machines) and must give the caller's setting back."""
    completed = subprocess.run([sys.executable, "-c", NAS_CODE], cwd=Path(__file__).parents[1],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().endswith("ok")
