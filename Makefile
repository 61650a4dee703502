# Two first-run commands: `make demo` (install, scan a real pretrained model, show the report)
# and `make test` (install, run the whole test suite). Both create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= demo-out

.PHONY: demo test install bench gpu clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The real pretrained model: the content-type classifier that the magika wheel ships (Apache-2.0).
demo: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/python -m cli.main scan "$$($(BIN)/python -c 'import magika, pathlib; print(pathlib.Path(magika.__file__).parent / "models/standard_v3_3/model.onnx")')" \
		--level layer --samples 1024 --json $(OUT)/magika.json --heatmap $(OUT)/magika.png --html $(OUT)/magika.html

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/scan_overhead.py

# GPU extras: onnxruntime-gpu replaces onnxruntime (same import name), then CuPy for CUDA 12.
gpu: $(STAMP)
	$(BIN)/pip uninstall -y onnxruntime
	$(BIN)/pip install -e ".[gpu]"

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
