# Quick start: `make demo` runs the embedded loopback lab; `make test` runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench bench-vs-strongswan bench-dataplane fuzz clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ikegate demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	cd bench && for b in setup_rate delete_all cli_scale cli_startup esp_throughput dataplane_path ping_rtt ssh_load; do \
		../$(BIN)/python $$b.py || exit 1; done
	cd bench && ../$(BIN)/python setup_rate.py --version 1 -n 1000

fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py -n 10000000

# ikegate against strongSwan's responder, driven by strongSwan's load-tester (root; skips with the reason if not)
bench-vs-strongswan: $(STAMP)
	$(BIN)/python bench/vs_strongswan.py

# the ESP dataplane against strongSwan kernel-libipsec, iperf3 through both pairs (root; skips with the reason if not)
bench-dataplane: $(STAMP)
	$(BIN)/python bench/dataplane_vs_libipsec.py

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
