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

# torch is pinned to the CPU build (a looser pin downloads a multi-GB CUDA build); it is
# needed by the tests that export real PyTorch models and by `redaudit nas`.
TORCH ?= torch==2.13.0

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The real pretrained model: the content-type CNN that the magika wheel ships (Apache-2.0), probed
# with real inputs: byte features of 2,560 real files that installed packages ship.
MAGIKA_MODEL = $$($(BIN)/python -c 'import magika, pathlib; print(pathlib.Path(magika.__file__).parent / "models/standard_v3_3/model.onnx")')

demo: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/python examples/magika_inputs.py $(OUT)/magika_inputs.npz
	$(BIN)/redaudit scan "$(MAGIKA_MODEL)" --inputs $(OUT)/magika_inputs.npz \
		--json $(OUT)/magika.json --heatmap $(OUT)/magika.png --html $(OUT)/magika.html

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/scan_overhead.py

# GPU extras: onnxruntime-gpu (CUDA 13, with its CUDA/cuDNN libraries from pip) replaces onnxruntime
# (same import name), and CuPy for CUDA 13. `redaudit doctor` checks the result.
gpu: $(STAMP)
	$(BIN)/pip uninstall -y onnxruntime
	$(BIN)/pip install -e ".[gpu]"

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
