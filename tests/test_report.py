"""Report renderers on hand-built ScanResults: strict JSON and its round trip, PNG heatmaps,
the self-contained HTML page (escaping of untrusted layer names included)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from redaudit.core.msrs import msrs_of_matrix
from redaudit.report import heatmap, html as html_report, json_report
from redaudit.core.result import LayerInfo, ModelInfo, ScanConfig, ScanResult

EVIL = '<script>alert("x")</script>'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REQUIRED_KEYS = {
    "msrs", "msrs_std", "log2_msrs", "msrs_batches", "layers", "similarity", "samples", "batches",
    "dropped_samples", "nan_batches", "inputs", "model", "config", "consecutive_similarity",
    "top_pairs", "provider", "backend", "timings", "warnings", "redaudit_version", "schema_version",
    "micro_batch",
}


def make_result(*, config: ScanConfig | None = None, msrs: float | None = None,
                inputs_real: bool = False) -> ScanResult:
    """Four layers: 0 and 1 nearly identical, 2 moderately alike, 3 degenerate (NaN row)."""
    nan = float("nan")
    similarity = np.array([
        [1.00, 0.95, 0.40, nan],
        [0.95, 1.00, 0.85, nan],
        [0.40, 0.85, 1.00, nan],
        [nan, nan, nan, nan],
    ])
    config = config or ScanConfig(cka_batch=None, seed=3, taps=("a", "b"), dims=(("batch", 8),),
                                  int_range=(0, 255))
    batches = np.array([2.0, nan, 2.2])
    value = msrs if msrs is not None else msrs_of_matrix(similarity, config.epsilon, config.beta,
                                                         layer_mask=np.array([1, 1, 1, 0], bool))
    return ScanResult(
        model=ModelInfo(path='/models/"><img src=x onerror=alert(1)>.onnx', sha256="ab" * 32,
                        size_bytes=12345, parameter_count=678, opset=17, producer="pytorch",
                        inputs=(("input", "float32", ("N", 3, 32, 32)),)),
        layers=[
            LayerInfo("/stem/Relu_output_0", "Relu", ("N", 16)),
            LayerInfo("/layer1/layer1.0/relu/Relu_output_0", "Relu", ("N", 16), node="/layer1/Relu"),
            LayerInfo(EVIL, "Add", ("N", 32)),
            LayerInfo("dead", "Relu", ("N", 32)),
        ],
        similarity=similarity, msrs=value, msrs_std=0.1414, msrs_batches=batches, config=config,
        samples=768, batches=3, dropped_samples=12, nan_batches=1, inputs_real=inputs_real,
        input_hash="cafe" * 16, provider="CPUExecutionProvider", backend="numpy",
        redaudit_version="0.1.0", timings={"load_s": 0.01, "run_s": 1.5, "total_s": 1.75},
        layer_issues={"dead": "constant output in every batch"},
        warnings=["synthetic probe inputs: MSRS of <untrusted> data"], micro_batch=64,
    )


# ---------------------------------------------------------------- JSON

def test_json_has_schema_keys_and_values():
    result = make_result()
    data = json_report.scan_to_dict(result)
    assert REQUIRED_KEYS <= set(data)
    assert data["schema_version"] == 1
    assert data["msrs"] == pytest.approx(result.msrs)
    assert data["log2_msrs"] == pytest.approx(np.log2(result.msrs))
    assert data["msrs_batches"] == [2.0, None, 2.2]
    assert [layer["name"] for layer in data["layers"]] == result.layer_names
    first, _, evil, dead = data["layers"]
    assert first["most_similar"] == "/layer1/layer1.0/relu/Relu_output_0"
    assert first["most_similar_cka"] == pytest.approx(0.95)
    assert first["shape"] == ["N", 16] and first["op"] == "Relu" and first["issue"] is None
    assert evil["most_similar"] == "/layer1/layer1.0/relu/Relu_output_0"
    assert dead["most_similar"] is None and dead["most_similar_cka"] is None
    assert dead["issue"] == "constant output in every batch"
    redundancy = result.layer_redundancy()
    assert [layer["redundancy"] for layer in data["layers"]] == pytest.approx(list(redundancy))
    assert first["redundancy"] > 0.99 and evil["redundancy"] > 0.99  # 0.95 and 0.85 > ε = 0.8
    assert data["similarity"][0][1] == 0.95 and data["similarity"][0][3] is None
    assert data["similarity"][3] == [None] * 4
    assert data["consecutive_similarity"] == [0.95, 0.85, None]
    assert data["top_pairs"][0] == {"a": "/stem/Relu_output_0",
                                    "b": "/layer1/layer1.0/relu/Relu_output_0", "cka": 0.95}
    assert [pair["cka"] for pair in data["top_pairs"]] == [0.95, 0.85, 0.40]  # NaN pairs left out
    assert data["inputs"] == {"real": False, "hash": "cafe" * 16}
    assert data["model"]["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["N", 3, 32, 32]}]
    config = data["config"]
    for key in ("level", "reduce", "cka_batch", "estimator", "aggregate", "epsilon", "beta", "seed"):
        assert key in config
    assert config["cka_batch"] == "all" and config["seed"] == 3
    assert config["dims"] == {"batch": 8} and config["int_range"] == [0, 255]
    assert data["nan_batches"] == 1 and data["dropped_samples"] == 12


def test_json_file_is_strict(tmp_path):
    path = json_report.write_json(make_result(), tmp_path / "scan.json")
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text

    def reject(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    data = json.loads(text, parse_constant=reject)
    assert data["similarity"][3][3] is None


def test_json_text_is_compact_and_faithful():
    result = make_result()
    text = json_report.dumps(result)
    assert json.loads(text) == json_report.scan_to_dict(result)
    assert '  "similarity": [\n    [1.0, 0.95, 0.4, null],\n' in text  # one line per matrix row
    assert '"shape": ["N", 16]' in text


def test_non_finite_msrs_becomes_null():
    assert json_report.scan_to_dict(make_result(msrs=float("nan")))["msrs"] is None
    zero = json_report.scan_to_dict(make_result(msrs=0.0))
    assert zero["msrs"] == 0.0 and zero["log2_msrs"] is None  # log2(0) = -inf
    json.dumps(zero, allow_nan=False)


def test_round_trip_through_file(tmp_path):
    result = make_result()
    path = json_report.write_json(result, tmp_path / "scan.json")
    back = json_report.read_json(path)
    assert back.model == result.model
    assert back.layers == result.layers
    assert back.config == result.config and back.config.cka_batch is None
    np.testing.assert_array_equal(back.similarity, result.similarity)  # NaN positions equal too
    np.testing.assert_array_equal(back.msrs_batches, result.msrs_batches)
    assert back.msrs == result.msrs and back.msrs_std == result.msrs_std
    for name in ("samples", "batches", "dropped_samples", "nan_batches", "inputs_real",
                 "input_hash", "provider", "backend", "redaudit_version", "timings",
                 "layer_issues", "warnings", "micro_batch"):
        assert getattr(back, name) == getattr(result, name), name
    np.testing.assert_allclose(back.layer_redundancy(), result.layer_redundancy())
    assert json_report.scan_to_dict(back) == json_report.scan_to_dict(result)


def test_round_trip_default_config():
    result = make_result(config=ScanConfig())
    back = json_report.scan_from_dict(json.loads(json_report.dumps(result)))
    assert back.config == ScanConfig() and back.config.cka_batch == 256


def test_bad_reports_raise_user_errors(tmp_path):
    data = json_report.scan_to_dict(make_result())
    with pytest.raises(json_report.ReportFormatError, match="schema_version"):
        json_report.scan_from_dict({**data, "schema_version": 99})
    incomplete = dict(data)
    del incomplete["model"]
    with pytest.raises(json_report.ReportFormatError, match="model"):
        json_report.scan_from_dict(incomplete)
    with pytest.raises(json_report.ReportFormatError):
        json_report.scan_from_dict({**data, "similarity": [[1.0]]})  # 4 layers, 1×1 matrix
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(json_report.ReportFormatError, match="not valid JSON"):
        json_report.read_json(broken)
    with pytest.raises(json_report.ReportFormatError, match="cannot read"):
        json_report.read_json(tmp_path / "missing.json")


# ---------------------------------------------------------------- heatmap

def _read_png(data: bytes) -> np.ndarray:
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    return matplotlib.image.imread(io.BytesIO(data), format="png")


def _count_colour(image: np.ndarray, hex_colour: str) -> int:
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    pixels = np.round(image[..., :3] * 255).astype(int)
    return int(np.all(pixels == target, axis=-1).sum())


def test_heatmap_png_is_readable_and_marks_nan(tmp_path):
    result = make_result()
    path = heatmap.write_heatmap(result, tmp_path / "heat.png")
    image = _read_png(path.read_bytes())
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    with_nan = _count_colour(image, heatmap.NAN_COLOR)
    finite = result.similarity[:3, :3]
    clean = _read_png(heatmap.heatmap_png_bytes(finite, result.layer_names[:3], "no NaN"))
    # 7 NaN cells of ~80×80 px each against (almost) none: NaN is drawn in its own colour.
    assert with_nan > 5000 and _count_colour(clean, heatmap.NAN_COLOR) < 200


def test_heatmap_survives_hostile_names():
    names = [r"$\\notacommand{$", "a" * 300, "", "é/ü/Ω"]
    _read_png(heatmap.heatmap_png_bytes(np.eye(4), names, r"title $\\frac{$"))


def test_heatmap_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="L × L"):
        heatmap.heatmap_png_bytes(np.eye(3), ["a", "b"], None)


def test_many_layers_subsample_ticks():
    size = 97
    rng = np.random.default_rng(0)
    matrix = rng.uniform(0, 1, (size, size))
    names = [f"/encoder/layer.{i}/output/LayerNorm/Add_1_output_0" for i in range(size)]
    figure = Figure()
    axes = figure.add_subplot()
    heatmap._draw_matrix(axes, matrix, names, "many")
    ticks = axes.get_xticks()
    assert 10 <= len(ticks) <= heatmap.MAX_TICKS and ticks[0] == 0
    labels = [label.get_text() for label in axes.get_yticklabels()]
    assert all(len(label) <= heatmap.MAX_LABEL_CHARS + 4 for label in labels)
    assert _read_png(heatmap.heatmap_png_bytes(matrix, names, "many")).shape[0] > 300


def test_shorten_label():
    assert heatmap.shorten_label("/stem/Relu_output_0") == "stem/Relu"
    short = heatmap.shorten_label("/encoder/layer.11/attention/output/LayerNorm/Add_1_output_0", 28)
    assert short == "encoder/…/LayerNorm/Add_1"
    # In a set of names the shared prefix goes first, so the block index survives.
    names = [f"/encoder/layer.{i}/attention/output/LayerNorm/Add_1_output_0" for i in (0, 11)]
    assert heatmap.axis_labels(names) == ["layer.0/…/LayerNorm/Add_1", "layer.11/…/LayerNorm/Add_1"]
    # TensorFlow/JAX names: ":0" suffix, a scope most (not all) tensors share.
    scope = "jax2tf_get_logits_/pjit_get_logits_/MagikaV2"
    names = [f"{scope}/Dense_0/AddV2:0", f"{scope}/ApplyActivation_0/Mul_5:0", "Unsqueeze__115:0"]
    assert heatmap.axis_labels(names) == ["Dense_0/AddV2", "ApplyActivation_0/Mul_5", "Unsqueeze__115"]
    long_part = heatmap.shorten_label("x" * 40 + "y" * 40, 21)
    assert len(long_part) == 21 and long_part.startswith("x") and long_part.endswith("y")
    # Shortening must not merge distinct layers into one label.
    names = ["/a/very/long/prefix/one/Relu_output_0", "/another/long/prefix/one/Relu_output_0"]
    labels = heatmap.axis_labels(names, max_chars=12)
    assert len(set(labels)) == 2


def test_side_by_side_with_different_sizes():
    rng = np.random.default_rng(1)
    left, right = rng.uniform(0, 1, (6, 6)), rng.uniform(0, 1, (4, 4))
    data = heatmap.side_by_side_png_bytes(left, right, list("abcdef"), list("abcd"),
                                          ("v1: MSRS 3.0", "v2: MSRS 1.0"))
    image = _read_png(data)
    assert image.shape[1] > 1.5 * image.shape[0]


def test_heatmap_does_not_touch_pyplot():
    code = ("import sys, numpy as np; from redaudit.report.heatmap import heatmap_png_bytes; "
            "heatmap_png_bytes(np.eye(2), ['a', 'b'], 't'); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    completed = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent,
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr


# ---------------------------------------------------------------- HTML

class _PageParser(HTMLParser):
    """Collects what the assertions need: rows of the layer table, every src/href, tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.layer_rows = 0
        self.layer_cells: list[list[str]] = []  # text of each cell of the layer table
        self._table_classes: list[str] = []
        self._in_body = False
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append(tag)
        self.links += [value for key, value in attrs if key in ("src", "href") and value]
        if tag == "table":
            self._table_classes.append(attributes.get("class") or "")
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._table_classes[-1:] == ["layers"]:
            self.layer_rows += 1
            self.layer_cells.append([])
        elif tag == "td" and self._in_body and self._table_classes[-1:] == ["layers"]:
            self._in_cell = True
            self.layer_cells[-1].append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._table_classes.pop()
        elif tag == "tbody":
            self._in_body = False
        elif tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.layer_cells[-1][-1] += data


def test_html_is_self_contained_and_escaped(tmp_path):
    result = make_result()
    path = html_report.write_html(result, tmp_path / "scan.html")
    page = path.read_text(encoding="utf-8")
    parser = _PageParser()
    parser.feed(page)
    assert parser.layer_rows == len(result.layers)
    assert "script" not in parser.tags and "link" not in parser.tags
    assert parser.tags.count("svg") == 1 and "img" not in parser.tags  # the model path's <img> stays text
    assert len(parser.links) == 1 and parser.links[0].startswith("data:image/png;base64,")
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert EVIL not in page and "&lt;script&gt;alert(&#34;x&#34;)&lt;/" in page
    # The browser-visible text of each row is the full name (scope greyed, not removed).
    assert [row[1] for row in parser.layer_cells] == result.layer_names
    assert [row[2] for row in parser.layer_cells] == [layer.op for layer in result.layers]
    assert parser.layer_cells[3][8] == "constant output in every batch"  # after the Reduced column
    assert "&lt;untrusted&gt;" in page
    assert f"{result.msrs:.3f}" in page and "0.141" in page
    assert "constant output in every batch" in page
    assert "synthetic" in page and "CPUExecutionProvider" in page and "ab" * 32 in page
    assert "all" in page  # cka_batch=None spelled as in the CLI


def test_html_greys_out_shared_scope():
    scope = "/model/encoder/"
    layers = [LayerInfo(f"{scope}layer.{i}/Add_output_0", "Add", ("N", 4)) for i in range(3)]
    result = make_result()
    result = ScanResult(**{**result.__dict__, "layers": layers + [LayerInfo("logits", "Gemm", ("N", 2))],
                           "layer_issues": {}})
    page = html_report.render_html(result)
    assert '<span class="scope">/<wbr>model/<wbr>encoder/<wbr></span>layer.0/<wbr>Add_output_0' in page
    parser = _PageParser()
    parser.feed(page)
    assert [row[1] for row in parser.layer_cells] == result.layer_names


def test_html_embedded_png_decodes():
    import base64
    import re

    page = html_report.render_html(make_result(inputs_real=True))
    match = re.search(r'href="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert match is not None
    from io import BytesIO

    from matplotlib import colormaps
    from matplotlib.image import imread

    result = make_result(inputs_real=True)
    pixels = imread(BytesIO(base64.b64decode(match.group(1))), format="png")
    assert pixels.shape[:2] == result.similarity.shape  # one pixel per cell
    expected = colormaps["viridis"](np.clip(np.nan_to_num(result.similarity), 0, 1))
    expected[np.isnan(result.similarity)] = (0.85, 0.85, 0.85, 1.0)
    assert np.abs(pixels - expected).max() < 1 / 255 + 1e-6
    assert 'class="badge ok">real<' in page


# ---------------------------------------------------------------- end to end

def test_reports_of_a_real_scan(tmp_path, save_model):
    """Scan a generated residual CNN whose block 1 is the identity on its input (zeroed branch):
    the reports must name (block0_out, block1_out) as the top pair with CKA 1."""
    import models
    import redaudit

    path = save_model(models.residual_cnn(blocks=3, zero_branch=1))
    result = redaudit.scan(path, samples=64, cka_batch=32)
    json_path = json_report.write_json(result, tmp_path / "scan.json")
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["top_pairs"][0]["a"] == "block0_out" and data["top_pairs"][0]["b"] == "block1_out"
    assert data["top_pairs"][0]["cka"] == pytest.approx(1.0, abs=1e-6)
    assert data["model"]["sha256"] == result.model.sha256 and data["inputs"]["real"] is False
    back = json_report.read_json(json_path)
    assert json_report.scan_to_dict(back) == data
    _read_png(heatmap.write_heatmap(result, tmp_path / "scan.png").read_bytes())
    parser = _PageParser()
    parser.feed(html_report.write_html(result, tmp_path / "scan.html").read_text(encoding="utf-8"))
    assert [row[1] for row in parser.layer_cells] == result.layer_names
