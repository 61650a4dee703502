"""Terminal tables stay readable at 80 columns (or piped): one line per layer, no line wider than
the terminal, names shortened to what tells the layers apart (full names stay in the JSON)."""
from __future__ import annotations

import io

from rich.console import Console

import redaudit
from redaudit.cli.render import distinct_names, render_scan
from tests import models


def test_layers_fit_80_columns_one_line_each():
    result = redaudit.scan(models.masked_attention_encoder(layers=6), samples=64, cka_batch=32)
    buffer = io.StringIO()
    render_scan(result, Console(file=buffer, width=80))
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    start = next(i for i, line in enumerate(lines) if line.startswith("┡"))
    rows = lines[start + 1:start + 1 + len(result.layers)]
    assert [row.split("│")[1].strip() for row in rows] == [str(i) for i in range(len(result.layers))]


def test_distinct_names_drop_shared_path_parts_and_keep_names_apart():
    names = ["/m/embeddings/LayerNorm/out", *[f"/m/encoder/layer.{i}/output/LayerNorm/out" for i in range(3)]]
    assert distinct_names(names, 40) == ["embeddings", "encoder/layer.0/output", "encoder/layer.1/output",
                                         "encoder/layer.2/output"]
    short = distinct_names(names, 12)
    assert len(set(short)) == 4 and all(len(name) <= 12 for name in short)
