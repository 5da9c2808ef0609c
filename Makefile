# quantgate: build int8 artifacts for a CPU target and verify them on that target's CPUs.
#   make quantize TARGET=avx2 [MODE=dynamic|static] [MODEL=minilm] [ARGS='calibration.n_samples=256']
#   make verify TARGET=avx2                      (the default build folder again)
#   make verify ARTIFACT=q.onnx REFERENCE=fp32.onnx INPUTS=inputs.npz TARGET=avx2 [OUT=verify.json]
#   make inspect ARTIFACT=artifacts/minilm-dynamic-avx2/model.onnx
#   make test

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.quantgate-setup
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

TARGET ?= avx2
MODE ?= dynamic
MODEL ?= minilm
ARGS ?=
ARTIFACT_DIR := artifacts/$(MODEL)-$(MODE)-$(TARGET)

.PHONY: setup quantize verify inspect test test-fast clean

setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml
	@command -v qemu-x86_64 >/dev/null || { echo "installing qemu-user (emulated CPU profiles)"; \
		apt-get update -qq && apt-get install -y -qq qemu-user; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

quantize: setup
	$(PY) -m pipeline model=$(MODEL) mode=$(MODE) target=$(TARGET) $(ARGS)

verify: setup
ifdef ARTIFACT
	$(PY) -m pipeline.cli verify --artifact $(ARTIFACT) --reference $(REFERENCE) --inputs $(INPUTS) \
		--target $(TARGET) $(if $(OUT),--out $(OUT)) $(ARGS)
else
	$(PY) -m pipeline.cli verify --artifact-dir $(ARTIFACT_DIR) --target $(TARGET) $(if $(OUT),--out $(OUT)) $(ARGS)
endif

inspect: setup
	$(PY) -m pipeline.cli inspect $(or $(ARTIFACT),$(ARTIFACT_DIR)/model.onnx)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m 'not slow'

clean:
	rm -rf artifacts logs
