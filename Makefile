# The two commands: `make dryrun` (whole pipeline on the dry-run web) and `make test` (the test suite).
# Both create .venv on first use: the pinned CPU build of torch first, then the project with its test extra.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
# pywb, for the archive-crawl tests only, in a venv of its own: it would downgrade packages the project needs.
PYWB := .venv-pywb
PYWB_STAMP := $(PYWB)/.installed-stamp
RUN_DIR ?= runs/dryrun

.PHONY: dryrun test test-fast clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install torch==2.13.0
	$(VENV)/bin/pip install -e '.[test]'
	touch $(STAMP)

dryrun: $(STAMP)
	$(VENV)/bin/webtext run --run-dir $(RUN_DIR) --config jobs/configs/dryrun.toml --devweb

$(PYWB_STAMP):
	$(PYTHON) -m venv $(PYWB)
	$(PYWB)/bin/pip install pywb==2.10.0
	touch $(PYWB_STAMP)

test: $(STAMP) $(PYWB_STAMP)
	WEBTEXT_PYWB_BIN=$(PYWB)/bin $(VENV)/bin/pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow"

clean:
	rm -rf $(VENV) $(PYWB) runs
