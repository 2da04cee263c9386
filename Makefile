# The two commands of the README: `make demo` and `make test` (both set up the environment first).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-check test demo device-kit

setup:                   ## create or repair .venv (idempotent; seconds when nothing changed)
	scripts/setup.sh

setup-check:             ## only report whether .venv is complete and current
	scripts/setup.sh --check

# 1 torch thread per process: the tests run several processes at once, and contended OpenMP threads are ~10x slower
test: setup              ## set up, then run every test (per-test timeout)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q --timeout=300 test

demo: setup              ## set up, then run the demo: synthetic scenes -> bag -> node -> report + overlay video
	$(VENV)/bin/semseg-demo

device-kit:              ## build/device_kit/semseg_device_kit.tar.xz: the node + GPU measurements for an offline Python 3.12 GPU machine (KIT_ARGS=--no-model to leave the demo model out)
	python3 scripts/device_kit/build.py $(KIT_ARGS)
