# The two commands: `make dryrun` (whole pipeline on the dry-run web) and `make test` (the test suite).
# Both create .venv on first use: the pinned CPU build of torch first, then the project with its test extra.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
RUN_DIR ?= runs/dryrun

.PHONY: dryrun test test-fast clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install torch==2.13.0
	$(VENV)/bin/pip install -e '.[test]'
	touch $(STAMP)

dryrun: $(STAMP)
	$(VENV)/bin/webtext run --run-dir $(RUN_DIR) --config jobs/configs/dryrun.toml --devweb

test: $(STAMP)
	$(VENV)/bin/pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs
