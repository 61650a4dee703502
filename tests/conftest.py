"""Shared fixtures: generated models on disk, the magika model, a CLI runner."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))

import models  # noqa: E402


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def save_model(tmp_path: Path):
    def save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        onnx.save(model, str(path))
        return path
    return save


@pytest.fixture(scope="session")
def magika_model() -> Path:
    magika = pytest.importorskip("magika")
    path = Path(magika.__file__).parent / "models" / "standard_v3_3" / "model.onnx"
    if not path.exists():
        pytest.skip(f"magika {magika.__version__} ships no standard_v3_3 model")
    return path


@pytest.fixture
def residual_model_path(save_model) -> Path:
    return save_model(models.residual_cnn(blocks=3))


#: Debian's Chromium, driven by Playwright through its executable path (never `playwright install`).
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the HTML and dashboard tests; CI (REDAUDIT_REQUIRE_BROWSER=1)
    fails instead of skipping when it is missing."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed (pip install playwright)"
    if missing is None and not CHROMIUM.exists():
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if missing:
        if os.environ.get("REDAUDIT_REQUIRE_BROWSER"):
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield instance
        instance.close()
