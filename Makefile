# quantgate: build int8 artifacts for a CPU target and verify them on that target's CPUs.
# `make help` prints this block. Every target runs the one command line, `quantgate COMMAND [options] [key=value ...]`
# (here .venv/bin/python -m pipeline.cli; `quantgate --help`, `quantgate COMMAND --help`). ARGS are Hydra overrides.
# Exit codes are the same for every command (README "Command line"): 0 ok, 1 a check failed, 2 refused
# (bad command line, config or input), 3 refused by the guard, 4 not verified.
#
# Build and verify (set up on first use: the venv, and qemu-user/debootstrap/sshd/registry via apt-get;
#   make test also chromium):
#   make quantize TARGET=avx2 [MODE=dynamic|static|qat|auto] [MODEL=minilm|digits_cnn] [ARGS='calibration.n_samples=256']
#   make quantize MODEL=hf MODE=int4|int8 ARGS='model.name_or_path=DIR model.task=text-generation'   (decoders)
#   make verify TARGET=avx2                      (the default build folder again)
#   make verify ARTIFACT_DIR=artifacts/x         (any built folder; its target comes from its manifest)
#   make verify ARTIFACT=q.onnx REFERENCE=fp32.onnx INPUTS=inputs.npz TARGET=avx2 [OUT=verify.json]
#   EXPORT=aoti: a torch AOTInductor package (model.pt2) instead of ONNX, e.g.
#     make quantize EXPORT=aoti MODEL=digits_cnn MODE=static TARGET=avx2   (artifacts/...-aoti/)
#   RUNTIME=ort116 (conf/runtime/) or RUNTIME="onnxruntime==1.16.3": build for / verify in that runtime
#     (its own folder: artifacts/<model>-<mode>-<target>-<runtime>/)
#   make matrix [RELEASE=candidate] [JOBS=2] [LAUNCHER=joblib|submitit_local|submitit_slurm|ray] [ARGS='target=avx2,avx512']
#   make test / make test-fast [TEST_WORKERS=auto|N|0]   (docs/contributing.md "Tests"; test files in parallel processes)
# Read and report (no emulator, no apt-get):
#   make inspect ARTIFACT=artifacts/minilm-dynamic-avx2/model.onnx [NODE=name | NODE=all]   (NODE: its source files)
#   make audit ARTIFACT=model.pt2|lib.so|folder [TARGET=avx2]   (which CPU features the machine code needs)
#   make signoff [RELEASE=candidate] [WAIVERS=conf/waivers/candidate.yaml] [BASELINE=rc1]
#                [ARGS='release.max_latency_ratio=1.2']   (reports/<release>/)
#   make bench [RELEASE=candidate | ARTIFACTS=folder]   (reports/<release>/bench/results.json, results.md; every
#                kind: CNN, detector, transformer, int4/int8 decoder; docs/guides/measurements.md)
#   make bench-decoder [DECODER_DIR=bench-decoder]   (a ~100M-parameter Llama from a config, built int4 and int8,
#                benched against its fp32 export: reports/bench-decoder/)
# Release trust (docs/guides/releases.md): signatures, provenance, an OCI registry.
#   make keys [DAYS=365] [FORCE=1]               (keys/quantgate.{key,pub,crt}: a development key pair)
#   make sign [RELEASE=candidate] [KEY=keys/quantgate.key] [CERT=... CHAIN=...]   (a ready release only)
#   make provenance ARTIFACT=artifacts/<release>/<artifact> [PUBLIC_KEY=keys/quantgate.pub]
#   make registry [REGISTRY_PORT=5000] / make registry-stop   (local CNCF registry on 127.0.0.1, .registry/)
#   make publish [RELEASE=candidate] [REGISTRY=localhost:5000/quantgate] [FORCE=1]
#   make pull REF=localhost:5000/quantgate/<artifact>:<release> [OUT=deploy/] [PUBLIC_KEY=...] [FORCE=1]
#   make signoff checks signatures with PUBLIC_KEY when it exists; REQUIRE_SIGNATURES=1 makes them mandatory.
# The guard alone, for deployments (docs/guides/targets.md "The guard in a deployment"; no network):
#   make guard-wheel [DIST=dist]                 (dist/quantgate_guard-<version>-py3-none-any.whl)
# quantgate installed outside a checkout (docs/guides/building.md "Install as a package"; conf/ and the schemas inside):
#   make wheel [DIST=dist]                       (dist/quantgate-<version>-py3-none-any.whl)
# Housekeeping: make setup (venv only) / make system-tools, make test-tools (apt-get) / make clean / make help
# The environment decides HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, HF_DATASETS_OFFLINE (default 1: no model hub).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
QG := $(PY) -m pipeline.cli
SETUP_STAMP := $(VENV)/.quantgate-setup
HF_HUB_OFFLINE ?= 1
TRANSFORMERS_OFFLINE ?= 1
HF_DATASETS_OFFLINE ?= 1
export HF_HUB_OFFLINE TRANSFORMERS_OFFLINE HF_DATASETS_OFFLINE

TARGET ?= avx2
# models users bring default to mode=auto (conf/model/{onnx,torch,hf}.yaml), the built-in ones to dynamic
MODE ?= $(if $(filter onnx torch hf,$(MODEL)),auto,dynamic)
MODEL ?= minilm
EXPORT ?= onnx
ARGS ?=
RUNTIME ?=
# A name selects conf/runtime/<name>.yaml; pip lines (they contain = < or >) fill runtime=custom.
comma := ,
space := $(subst x, ,x)
RUNTIME_ARG = $(if $(RUNTIME),$(if $(findstring =,$(RUNTIME))$(findstring <,$(RUNTIME))$(findstring >,$(RUNTIME)),\
	runtime=custom 'runtime.requirements=[$(subst $(space),$(comma),$(patsubst %,"%",$(RUNTIME)))]',runtime=$(RUNTIME)))
# The default build folder; with RUNTIME=, and for a user's model (MODEL=onnx, hf, torch: named after the model
# file, checkpoint or factory given in ARGS), quantgate names it (pipeline/builder/task.py: artifact_name).
ARTIFACT_DIR ?= $(if $(or $(RUNTIME),$(filter onnx hf torch,$(MODEL))),$(shell $(PY) -m pipeline.cli build \
	--artifact-folder model=$(MODEL) mode=$(MODE) target=$(TARGET) export=$(EXPORT) $(RUNTIME_ARG) $(ARGS)),\
	artifacts/$(MODEL)-$(MODE)-$(TARGET)$(if $(filter aoti,$(EXPORT)),-aoti))
ARTIFACT_DIR_GIVEN = $(filter command line environment,$(origin ARTIFACT_DIR))
# Compare with TARGET only when the user named one; otherwise the artifact's own stamp (if any).
TARGET_GIVEN = $(filter command line environment,$(origin TARGET))

# A release: every artifact of `make matrix` lands in artifacts/$(RELEASE)/, signed off into reports/$(RELEASE)/.
RELEASE ?= candidate
JOBS ?= 2
# conf/hydra/launcher/: joblib | submitit_local | submitit_slurm | ray
LAUNCHER ?= joblib
WAIVERS ?=

# Release trust: keys, the registry, publishing and pulling (pipeline/release/).
KEYS_DIR ?= keys
KEY ?= $(KEYS_DIR)/quantgate.key
PUBLIC_KEY ?= $(KEYS_DIR)/quantgate.pub
CERT ?=
CHAIN ?=
DAYS ?= 365
FORCE ?=
REQUIRE_SIGNATURES ?=
REGISTRY_PORT ?= 5000
REGISTRY_DIR ?= .registry
REGISTRY ?= localhost:$(REGISTRY_PORT)/quantgate
REF ?=

.DEFAULT_GOAL := help
.PHONY: help setup system-tools test-tools quantize verify audit inspect matrix signoff bench bench-decoder test \
	test-fast clean \
	keys sign provenance registry registry-stop publish pull guard-wheel wheel

help:
	@sed -n '1,/^$$/s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))
	@echo "Variables (current value):"
	@$(foreach v,TARGET MODE MODEL EXPORT RUNTIME ARGS ARTIFACT_DIR RELEASE JOBS LAUNCHER WAIVERS BASELINE \
		KEY PUBLIC_KEY REGISTRY REF TEST_WORKERS HF_HUB_OFFLINE,printf '  %-16s %s\n' '$(v)' '$(if $(filter ARTIFACT_DIR,$(v)),$(if $(RUNTIME),<named by quantgate>,$($(v))),$($(v)))';)

# The venv only; targets that run emulators, sshd or a registry also depend on system-tools.
setup: $(SETUP_STAMP)

# Checked on every run, not only when the venv is built: a machine set up before a tool was
# added still gets it.
system-tools:
	@command -v qemu-x86_64 >/dev/null || { echo "installing qemu-user (emulated CPU profiles)"; \
		apt-get update -qq && apt-get install -y -qq qemu-user; }
	@command -v debootstrap >/dev/null || { echo "installing debootstrap (arm64 sysroot for the Arm CPU profiles)"; \
		apt-get update -qq && apt-get install -y -qq debootstrap; }
	@command -v docker-registry >/dev/null || { echo "installing docker-registry (local OCI registry: make registry, publish tests)"; \
		apt-get update -qq && apt-get install -y -qq docker-registry; }
	@test -x /usr/sbin/sshd || { echo "installing openssh-server (ssh lab-host profiles and their tests)"; \
		apt-get update -qq && apt-get install -y -qq openssh-server; }

# The tests alone also need a real headless browser (they check the signoff page's grid and links).
test-tools:
	@command -v chromium >/dev/null || { echo "installing chromium (the tests check the signoff page in a headless browser)"; \
		apt-get update -qq && apt-get install -y -qq chromium; }

$(SETUP_STAMP): pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# The venv runs quantgate from this checkout: the editable install maps its packages here, and the .pth puts
	@# the checkout itself on sys.path (tests/, and children started with it as working folder).
	$(PY) -c 'import sysconfig, pathlib; pathlib.Path(sysconfig.get_paths()["purelib"], "quantgate-checkout.pth").write_text("$(CURDIR)\n")'
	@touch $@

quantize: setup system-tools
	$(QG) build model=$(MODEL) mode=$(MODE) target=$(TARGET) export=$(EXPORT) $(RUNTIME_ARG) $(ARGS)

verify: setup system-tools
ifneq ($(filter aoti,$(EXPORT))$(filter %.pt2,$(ARTIFACT)),)
	$(QG) verify --artifact-dir $(or $(patsubst %/model.pt2,%,$(ARTIFACT)),$(ARTIFACT_DIR)) $(ARGS)
else ifdef ARTIFACT
	$(QG) verify --artifact $(ARTIFACT) --reference $(REFERENCE) --inputs $(INPUTS) \
		--target $(TARGET) $(if $(OUT),--out $(OUT)) $(RUNTIME_ARG) $(ARGS)
else
	$(QG) verify --artifact-dir $(ARTIFACT_DIR) $(if $(or $(TARGET_GIVEN),$(if $(ARTIFACT_DIR_GIVEN),,1)),--target $(TARGET)) \
		$(if $(OUT),--out $(OUT)) $(RUNTIME_ARG) $(ARGS)
endif

audit: setup
	$(QG) audit $(or $(ARTIFACT),$(ARTIFACT_DIR)) $(if $(TARGET_GIVEN),--target $(TARGET)) \
		$(if $(OUT),--json $(OUT))

inspect: setup
	$(QG) inspect $(or $(ARTIFACT),$(ARTIFACT_DIR)/model.onnx) \
		$(if $(NODE),$(if $(filter all,$(NODE)),--nodes,--node $(NODE)))

# Builds and verifies every combination in parallel; one failed combination does not stop the others,
# and the run ends with a table (also artifacts/$(RELEASE)/matrix.json). The signoff is the gate.
matrix: setup system-tools
	$(QG) matrix --release $(RELEASE) --launcher $(LAUNCHER) --jobs $(JOBS) $(ARGS)

# Exit 0 only when the verdict is `ready`.
signoff: setup
	$(QG) signoff --release $(RELEASE) --artifacts-dir artifacts/$(RELEASE) --out reports/$(RELEASE) \
		$(if $(WAIVERS),--waivers $(WAIVERS)) $(if $(wildcard $(PUBLIC_KEY)),--public-key $(PUBLIC_KEY)) \
		$(if $(REQUIRE_SIGNATURES),--require-signatures) $(if $(BASELINE),--baseline $(BASELINE)) $(ARGS)

keys: setup
	$(QG) keys --out $(KEYS_DIR) --days $(DAYS) $(if $(FORCE),--force)

# Signs every artifact folder of a ready release (signoff.json, provenance.intoto.json, model.sig).
sign: setup
	$(QG) sign --release $(RELEASE) --artifacts-dir artifacts/$(RELEASE) --report reports/$(RELEASE) \
		--key $(KEY) $(if $(CERT),--certificate $(CERT)) $(if $(CHAIN),--chain $(CHAIN)) $(if $(WAIVERS),--waivers $(WAIVERS))

provenance: setup
	$(QG) provenance $(or $(ARTIFACT),$(ARTIFACT_DIR)) $(if $(wildcard $(PUBLIC_KEY)),--public-key $(PUBLIC_KEY))

registry: setup system-tools
	$(QG) registry start --dir $(REGISTRY_DIR) --port $(REGISTRY_PORT)

registry-stop:
	$(QG) registry stop --dir $(REGISTRY_DIR)

publish: setup system-tools
	$(QG) publish --release $(RELEASE) --registry $(REGISTRY) --artifacts-dir artifacts/$(RELEASE) \
		--report reports/$(RELEASE) --public-key $(PUBLIC_KEY) $(if $(WAIVERS),--waivers $(WAIVERS)) $(if $(FORCE),--force)

# Verifies every sha256 and the signature before anything lands in OUT/<artifact>/.
pull: setup system-tools
	@test -n "$(REF)" || { echo "quantgate pull: give REF=<host[:port]>/<repository>:<tag>, e.g." \
		"REF=localhost:5000/quantgate/minilm-dynamic-avx2:rc1" >&2; exit 2; }
	$(QG) pull $(REF) --out $(or $(OUT),deploy) --public-key $(PUBLIC_KEY) $(if $(FORCE),--force)

bench: setup
	$(QG) bench --release $(RELEASE) --artifacts-dir $(or $(ARTIFACTS),artifacts/$(RELEASE)) $(ARGS)

# The decoder bench on a model of about 100M parameters (random weights: speed, memory and size, not text), made
# offline from a Llama config; the gate's figures are not judged (verify off, build_gate=false).
DECODER_DIR ?= bench-decoder
DECODER_BUILD = $(QG) build model=hf model.task=text-generation target=$(TARGET) \
	model.name_or_path=$(DECODER_DIR)/llama-100m artifacts_dir=$(DECODER_DIR)/artifacts verify.enabled=false \
	verify.build_gate=false calibration.n_heldout=4
bench-decoder: setup
	test -f $(DECODER_DIR)/llama-100m/config.json || $(PY) -m tests.fixtures.bench_decoder $(DECODER_DIR)/llama-100m
	$(DECODER_BUILD) mode=int4
	$(DECODER_BUILD) mode=int8
	$(QG) bench --artifacts-dir $(DECODER_DIR)/artifacts --out reports/bench-decoder $(ARGS)

# pipeline/guard/ and its own pyproject.toml, built from a copy (no build/ or egg-info left in the tree) with
# the venv's pip and setuptools: no build isolation, no index, so no network.
DIST ?= dist
GUARD_PY = $(if $(wildcard $(PY)),$(PY),$(PYTHON))
guard-wheel:
	@mkdir -p $(DIST) && tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		cp pipeline/guard/*.py pipeline/guard/pyproject.toml "$$tmp"/ && \
		$(GUARD_PY) -m pip wheel -q --no-deps --no-build-isolation --no-index --wheel-dir "$(abspath $(DIST))" "$$tmp" && \
		echo "built $$(ls -t $(DIST)/quantgate_guard-*.whl | head -1): pip install it beside onnxruntime or torch"

# quantgate itself (setup.py: its packages, conf/ and docs/schemas/ as package data), from a copy as above.
wheel:
	@mkdir -p $(DIST) && tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		cp -r --parents pyproject.toml setup.py README.md pipeline calibration hydra_plugins conf docs/schemas "$$tmp"/ && \
		$(GUARD_PY) -m pip wheel -q --no-deps --no-build-isolation --no-index --wheel-dir "$(abspath $(DIST))" "$$tmp" && \
		echo "built $$(ls -t $(DIST)/quantgate-*.whl | head -1): pip install it (its dependencies: pyproject.toml)"

# Test files spread over TEST_WORKERS processes (pytest-xdist; a file's tests stay together, so its fixtures are
# built once): much of the suite waits on single-threaded QEMU children. TEST_WORKERS=0: one process.
TEST_WORKERS ?= auto
TEST_PARALLEL = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: setup system-tools test-tools
	$(PY) -m pytest -q $(TEST_PARALLEL)

test-fast: setup system-tools test-tools
	$(PY) -m pytest -q $(TEST_PARALLEL) -m 'not slow'

clean:
	rm -rf artifacts logs reports bench bench-decoder
