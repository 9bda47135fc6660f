# Two commands work on a fresh machine: `make detect` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# What a new venv takes on disk (torch 2.14.1 is a CUDA build: 4.4 GB with its nvidia libraries; 6.7 GB in all).
INSTALL_GB ?= 7
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: install test test-isa test-slow test-all detect demo embedded-model clean

install: $(STAMP)

# Re-run the install only when the packaging changes; torch pinned to the build on this disk.
$(STAMP): pyproject.toml
	@$(PY) tools/check_install_space.py $(VENV) --need-gb $(INSTALL_GB)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	# One resolve for everything: gradio caps pillow (<13), so pillow is chosen once, with it.
	$(BIN)/pip install -q -e ".[dev,demo]"
	# lvis 0.5.3 would pull opencv-python next to albumentations' headless build: no deps.
	$(BIN)/pip install -q --no-deps lvis==0.5.3
	# trackers (ByteTrack for video) declares opencv-python beside the headless build too: no deps.
	$(BIN)/pip install -q --no-deps trackers==2.6.1
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q -m "not slow"

# The precision tests again as an AVX2-only CPU runs them (no VNNI, no bf16 in oneDNN or ATen), on any x86
# machine: their tolerances must hold on every CPU, not only on the one that ran `make test`.
ISA_TESTS := tests/test_precision.py tests/test_cpu_linear.py tests/test_cpu_attention.py
test-isa: install
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest -q -m "not slow" $(ISA_TESTS)

# DDP with 2 gloo processes, CLI fast_dev_run, distributed loss normalisation (~1.5 min).
test-slow: install
	$(BIN)/python -m pytest -q -m slow

test-all: install
	$(BIN)/python -m pytest -q

SCENE := ovdet/assets/scene.png
DEFAULT_MODEL := ovdet/assets/default_model

# Detect a novel shape ("star"), an attribute phrase and a base shape in the bundled scene (without the
# embedded model, an untrained plumbing model stands in and says so, at threshold 0.6). The embedded model
# uses its own threshold (0.39, the F1-best of its tuning set): both red circles, the star and the square.
detect: install
	@if [ -f $(DEFAULT_MODEL)/config.json ]; then model=""; else \
	  test -f out/plumbing-model/config.json || $(BIN)/python tools/make_random_model.py out/plumbing-model; \
	  model="--model out/plumbing-model --threshold 0.6"; fi; \
	$(BIN)/ovdet detect $(SCENE) -q "star" -q "red circle" -q "square" $$model --draw out/detect --out out/detect/results.json

# The Gradio demo on http://127.0.0.1:7860 (DEMO_ARGS="--host 0.0.0.0 --port 8080" to change).
demo: install
	$(BIN)/ovdet demo $(DEMO_ARGS)

# Rebuild ovdet/assets/default_model from fixed seeds: CLIP pretraining, data, head training, eval, fp16 export.
embedded-model: install
	bash tools/build_embedded_model.sh

clean:
	rm -rf $(VENV) out
