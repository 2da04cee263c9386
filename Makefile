# The two commands of the README: `make demo` and `make test` (both set up the environment first).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-check test demo

setup:                   ## create or repair .venv (idempotent; seconds when nothing changed)
	scripts/setup.sh

setup-check:             ## only report whether .venv is complete and current
	scripts/setup.sh --check

# 1 torch thread per process: the tests run several processes at once, and contended OpenMP threads are ~10x slower
test: setup              ## set up, then run every test (per-test timeout)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q --timeout=300 test

demo: setup              ## set up, then run the demo: synthetic scenes -> bag -> node -> report + overlay video
	$(VENV)/bin/semseg-demo
