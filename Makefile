# The two commands of the README: `make demo` and `make test`. Both create .venv when it is
# missing or older than pyproject.toml, install the project into it, then do their job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_WORKDIR ?= demo-work

.PHONY: demo test test-fast compile clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kfp-finetune demo --workdir $(DEMO_WORKDIR) --summary $(DEMO_WORKDIR)/summary.json

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10

# Everything except the end-to-end kfp.local runs (marked slow).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Performance table of bench/README.md (under 15 minutes on 2 cores); BENCH_ARGS=--quick for fewer repetitions.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

compile: $(STAMP)
	$(BIN)/kfp-finetune compile -o kfp-finetune.yaml

clean:
	rm -rf $(DEMO_WORKDIR) kfp-local-root kfp-finetune.yaml .pytest_cache
