# Two commands for a fresh machine: `make demo` and `make test`.
# Everything they need (virtualenv, Python packages, Kafka jars) is installed here.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help install demo test test-unit test-integration bench bench-detectors bench-monitors calibration-table kafka-start kafka-stop lint clean

help:
	@echo "make demo             replay the speech-accuracy-decay scenario through a real worker on a local Kafka"
	@echo "make test             unit, property, doctest, integration and end-to-end tests (starts its own Kafka)"
	@echo "make test-unit        only the fast tests, no broker"
	@echo "make bench            events/s and memory, pure path, count-only faust, 1 and 2 workers, 3 workloads, vs a plain-consumer ceiling;"
	@echo "                      then alert latency and lag at a steady 10,000 events/s for 60 s (real broker)"
	@echo "make bench-detectors  detection delay, false alarms and speed: ours vs river's"
	@echo "make bench-monitors   the monitors (issue 13): label-free estimates, the false-alarm budget, early segments,"
	@echo "                      sequential data tests; before vs after vs a chunked baseline"
	@echo "make calibration-table  simulate the shipped alarm thresholds again, after an edit to their simulation"
	@echo "make kafka-start|kafka-stop  the local broker on 127.0.0.1:9092"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/driftline demo

test: $(STAMP)
	sh scripts/ensure-tools.sh
	$(PY) -m pytest

test-unit: $(STAMP)
	$(PY) -m pytest -m "not integration"

test-integration: $(STAMP)
	$(PY) -m pytest -m integration tests/integration

bench: $(STAMP)
	$(PY) benchmarks/bench_worker.py --workload all

bench-detectors: $(STAMP)
	$(PY) benchmarks/bench_detectors.py

bench-monitors: $(STAMP)
	$(PY) benchmarks/bench_monitors_performance.py
	$(PY) benchmarks/bench_monitors_data.py

calibration-table: $(STAMP)
	$(PY) scripts/calibration_table.py

kafka-start: $(STAMP)
	$(VENV)/bin/driftline kafka start

kafka-stop: $(STAMP)
	$(VENV)/bin/driftline kafka stop

clean:
	rm -rf .driftline .pytest_cache build *.egg-info
