# The two commands of the README: `make demo` and `make test` (both set up the environment first).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-check test demo

setup:                   ## create or repair .venv (idempotent; seconds when nothing changed)
	scripts/setup.sh

setup-check:             ## only report whether .venv is complete and current
	scripts/setup.sh --check

test: setup              ## set up, then run every test (per-test timeout)
	$(PY) -m pytest -q --timeout=300 test

demo: setup              ## set up, then run the demo (the node on a test image)
	@if [ -f semseg_ros/demo.py ]; then \
		$(VENV)/bin/semseg-demo; \
	else \
		echo "The demo (semseg_ros/demo.py: the perception node on a test image) is not in this checkout yet."; \
		echo "Checking the ROS side instead:"; \
		$(VENV)/bin/semseg-env --check; \
	fi
