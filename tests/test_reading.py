"""The reading of an MSRS (scale, interval, sentence): computed once, shown the same in the JSON,
the HTML report and the terminal."""
from __future__ import annotations

import io
import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest
from rich.console import Console

from redaudit.cli.render import render_scan
from redaudit.core.bootstrap import bootstrap_mean
from redaudit.report.html import render_html
from redaudit.report.json_report import dumps, scan_from_dict, scan_to_dict
from redaudit.report.numbers import interval_text
from redaudit.report.reading import band, read_msrs, reading_of_result
from tests.test_report import make_result


def plain_count(matrix: list[list[float]], epsilon: float) -> tuple[int, int]:
    above = defined = 0
    for i in range(len(matrix)):
        for j in range(i + 1, len(matrix)):
            if not math.isnan(matrix[i][j]):
                defined += 1
                above += matrix[i][j] > epsilon
    return above, defined


def test_counts_and_neighbours_equal_a_plain_loop():
    rng = np.random.default_rng(4)
    a = rng.uniform(0.3, 1.0, size=(9, 9))
    matrix = (a + a.T) / 2
    np.fill_diagonal(matrix, 1.0)
    matrix[2, 5] = matrix[5, 2] = np.nan
    reading = read_msrs(matrix, 10.0, [9.0, 11.0, 10.0], 0.7)
    above, defined = plain_count(matrix.tolist(), 0.7)
    assert (reading.pairs_above, reading.pairs_defined, reading.max_pairs) == (above, defined, 36)
    best = max(range(8), key=lambda i: matrix[i, i + 1])
    assert reading.consecutive == (best, float(matrix[best, best + 1]))
    assert reading.interval == bootstrap_mean([9.0, 11.0, 10.0])
    assert reading.log2_msrs == pytest.approx(math.log2(10.0))
    assert f"{above} of 36 layer pairs" in reading.sentence and "(1 pair undefined)" in reading.sentence
    assert f"#{best} and #{best + 1} (CKA {matrix[best, best + 1]:.2f})" in reading.sentence


@pytest.mark.parametrize("fraction, words", [(0.0, "no redundancy at this ε"), (0.01, "low redundancy"),
                                             (0.0999, "low redundancy"), (0.10, "moderate redundancy"),
                                             (0.4999, "moderate redundancy"), (0.5, "high redundancy"),
                                             (0.8, "very high redundancy"), (1.0, "very high redundancy")])
def test_bands(fraction, words):
    assert band(fraction) == words


def test_sentence_of_the_demo_scale():
    """MiniLM's shape: 8 of 21 pairs above ε, neighbours #1–#2 at 0.94."""
    matrix = np.full((7, 7), 0.5)
    np.fill_diagonal(matrix, 1.0)
    pairs = [(0, 1, 0.92), (1, 2, 0.94), (2, 3, 0.93), (3, 4, 0.92), (0, 2, 0.85), (1, 3, 0.86), (2, 4, 0.84),
             (0, 3, 0.81)]
    for i, j, value in pairs:
        matrix[i, j] = matrix[j, i] = value
    reading = read_msrs(matrix, 7.95, [7.5, 8.4, 7.9, 8.0, 7.8, 8.1, 8.0, 7.9, 8.2, 7.7], 0.8)
    assert reading.sentence == ("8 of 21 layer pairs (38.1%) have a mean CKA above ε = 0.8: moderate redundancy; "
                                "the most similar consecutive layers are #1 and #2 (CKA 0.94).")
    few = read_msrs(matrix, 7.95, [7.5, 8.4, 7.9, 8.0], 0.8)
    assert few.sentence.endswith("(CKA 0.94); 4 batches, too few for a confidence interval (it needs 10).")


def test_sentences_for_what_cannot_be_read():
    two = np.array([[1.0, 0.2], [0.2, 1.0]])
    assert read_msrs(two, float("nan"), [float("nan")] * 3, 0.8).sentence.startswith("MSRS is undefined")
    assert "no pair to compare" in read_msrs(np.ones((1, 1)), 0.0, [0.0, 0.0], 0.8).sentence
    none = read_msrs(two, 0.0, [0.0, 0.0], 0.8)
    assert none.sentence.startswith("None of the 1 layer pairs") and none.band == "no redundancy at this ε"
    single = read_msrs(two, 0.0, [0.0], 0.8)
    assert "1 batch, too few for a confidence interval" in single.sentence and not single.interval.defined
    wide = read_msrs(two, 1.0, [0.2, 1.8, 0.4, 1.6] * 3, 0.1)
    assert "interval is wide" in wide.sentence and "more samples" in wide.sentence


def ten_batch_result():
    """make_result's matrix with ten finite batches: enough for an interval."""
    return replace(make_result(), msrs_batches=np.array([2.0, 2.2, 1.9, 2.1, 2.05, 1.95, 2.15, 2.0, 2.1, 1.9]),
                   batches=10)


def test_json_carries_the_reading_and_the_interval():
    result = ten_batch_result()
    data = json.loads(dumps(result))
    interval = bootstrap_mean(result.msrs_batches)
    assert data["msrs_ci"]["low"] == interval.low and data["msrs_ci"]["high"] == interval.high
    assert data["msrs_ci"]["level"] == 0.95 and data["msrs_ci"]["batches"] == interval.batches
    reading = reading_of_result(result)
    assert data["reading"]["sentence"] == reading.sentence
    assert data["reading"]["pairs_above_epsilon"] == reading.pairs_above
    assert data["reading"]["max_pairs"] == len(result.layers) * (len(result.layers) - 1) // 2
    # derived fields: a reloaded report recomputes them and writes the same
    assert scan_to_dict(scan_from_dict(data))["msrs_ci"] == data["msrs_ci"]
    assert scan_to_dict(scan_from_dict(data))["reading"] == data["reading"]
    # and a report written before they existed still reads
    old = {key: value for key, value in data.items() if key not in ("msrs_ci", "reading")}
    assert scan_from_dict(old).msrs_interval == interval


def test_single_batch_json_says_why_there_is_no_interval():
    result = replace(make_result(), msrs_batches=np.array([3.0]), batches=1)
    data = json.loads(dumps(result))
    assert data["msrs_ci"]["low"] is None and "too few batches to tell (1;" in data["msrs_ci"]["undefined_reason"]


def test_terminal_and_html_show_the_same_interval_and_sentence():
    result = ten_batch_result()
    reading = reading_of_result(result)
    buffer = io.StringIO()
    render_scan(result, Console(file=buffer, width=400, color_system=None))
    text = buffer.getvalue()
    assert interval_text(reading.interval) in text and reading.sentence in text
    assert re.search(r"MSRS \d+\.\d{4} ± \d+\.\d{4}, 95% CI \[", text)
    page = render_html(result)
    assert f'id="msrs-ci">{interval_text(reading.interval)}<' in page
    assert f'id="msrs-reading">{reading.sentence}<' in page


def test_too_few_batches_read_the_same_everywhere():
    """Two finite batches: no interval in the terminal, the HTML page or the JSON, each saying why."""
    result = make_result()
    buffer = io.StringIO()
    render_scan(result, Console(file=buffer, width=400, color_system=None))
    text = buffer.getvalue()
    assert "no CI (2 batches; needs 10)" in text and "95% CI [" not in text
    assert 'id="msrs-ci">no CI (2 batches; needs 10)<' in render_html(result)
    data = json.loads(dumps(result))
    assert data["msrs_ci"]["low"] is None and data["msrs_ci"]["batches"] == 2
    assert "2 batches, too few for a confidence interval" in data["reading"]["sentence"]
