# Upstream — targets a newcomer guesses. `make run` and `make test` need nothing but python3.
VENV    := .venv
PY      := $(VENV)/bin/python
TODAY   := $(shell date -u +%F)
STAMP   := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# The domain core is compiled with mypyc (setup.py), and a compiled module shadows its source:
# any domain source newer than the last install builds it again.
DOMAIN  := $(wildcard streams/domain/*.py)

.PHONY: help install pure run test test-kafka screenshots test-unit test-integration lint fmt bench bench-customers bench-hotpath bench-memory bench-latency bench-detection bench-sink bench-fanout bench-delivery bench-dashboard chaos hooks clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py $(DOMAIN)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP) ## create .venv and install Upstream with its dev tools (domain compiled with mypyc)

pure: ## remove the compiled domain (for line-level py-spy profiles) until a make target installs again
	rm -f streams/domain/*.so upstream_domain__mypyc*.so $(VENV)/.installed-*

run: install ## the whole stack on embedded Kafka + Postgres, with the denial-spike demo
	$(VENV)/bin/upstream dev

test: install ## unit, integration and end-to-end tests on real Kafka, Postgres and Chromium; line coverage of every process, with a floor
	bash scripts/ensure-chromium
	bash scripts/ensure-compose
	rm -f .coverage .coverage.*
	$(PY) -m coverage run -m pytest --durations=25
	@echo "== the unit suite again, the domain imported from its Python sources (its lines for coverage)"
	$(PY) -m coverage run -m pytest -q -p tests.python_domain tests/unit
	$(PY) -m coverage combine -q
	$(PY) -m coverage report

test-kafka: install ## the integration and e2e tests that use a broker again, on Apache Kafka 4 (KRaft, jars via mvn)
	bash scripts/ensure-chromium
	UPSTREAM_TEST_BROKER=kafka $(PY) -m pytest --durations=25 tests/integration tests/e2e

chaos: install ## SIGKILL the worker while feeds stream, Tansu then Apache Kafka: outputs equal field for field (CHAOS_RUNS=5, CHAOS_KILLS=10 each)
	for broker in tansu kafka; do for run in $$(seq $${CHAOS_RUNS:-5}); do \
		UPSTREAM_TEST_BROKER=$$broker UPSTREAM_CHAOS_KILLS=$${CHAOS_KILLS:-10} \
			$(PY) -m pytest -s tests/integration/test_chaos.py || exit 1; \
	done; done

screenshots: install ## the console's dashboard and alert detail, as the e2e console test leaves them, into docs/images
	bash scripts/ensure-chromium
	$(PY) -m pytest -q tests/e2e/test_console.py
	mkdir -p docs/images
	cp tests/artifacts/dashboard.png tests/artifacts/alert-detail.png docs/images/

test-unit: install ## the fast, pure tests only
	$(PY) -m pytest tests/unit

test-integration: install ## integration tests only (real broker and Postgres)
	$(PY) -m pytest tests/integration

bench: install ## worker claims/s vs the client's ceiling, 1 and 2 processes (bench/results/throughput-DATE.json)
	$(PY) -m bench.throughput > bench/results/throughput-$(TODAY).json

bench-customers: install ## worker RSS and CPU per claim: 1,000 customers of 10 keys against one customer of 10,000 (bench/results/customers-DATE.json)
	$(PY) -m bench.customers > bench/results/customers-$(TODAY).json

bench-hotpath: install ## CPU per claim of the worker's route and windows stages and per evaluation of its alerts stage, outside Kafka (JSON on stdout)
	$(PY) -m bench.hotpath

bench-memory: install ## worker RSS per key at 100k keys, and over a 10-minute soak, on Apache Kafka (bench/results/memory-kafka-DATE.json)
	$(PY) -m bench.memory --broker kafka > bench/results/memory-kafka-$(TODAY).json

bench-latency: install ## claim that closes a bucket → alert on a WebSocket, at 5,000 claims/s (bench/results/latency-5000-tansu-DATE.json)
	$(PY) -m bench.latency > bench/results/latency-5000-tansu-$(TODAY).json

bench-detection: install ## detection quality through the real worker (bench/results/detection-worker-DATE.json, table on stderr)
	$(PY) -m bench.detection --engine worker > bench/results/detection-worker-$(TODAY).json

bench-sink: install ## sink rows/s vs raw COPY (bench/results/sink-DATE.json, progress and table on stderr)
	$(PY) -m bench.sink > bench/results/sink-$(TODAY).json

bench-delivery: install ## alert delivery: 1,000 transitions/s to 50 webhook receivers (p50/p99, CPU)
	$(PY) -m bench.delivery > bench/results/delivery-$(TODAY).json

bench-fanout: install ## notifier fan-out: 2,000 WebSocket clients, 100 alerts/s for 60 s (p50/p99, CPU)
	$(PY) -m bench.fanout > bench/results/fanout-$(TODAY).json

bench-dashboard: install ## the console in Chromium with 1,000 open alerts over 500 keys: table and dashboard load times (bench/results/dashboard-DATE.json)
	bash scripts/ensure-chromium
	$(PY) -m bench.dashboard > bench/results/dashboard-$(TODAY).json

hooks: install ## install the pre-commit hooks (ruff, ruff-format, mypy, hygiene) into .git
	$(VENV)/bin/pre-commit install

lint: install ## ruff (lint + format check), mypy --strict, bandit and the import contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/bandit -q -c pyproject.toml -r streams sinks notifier schemas
	$(VENV)/bin/lint-imports --no-cache

fmt: install ## format and auto-fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: ## remove the venv, caches and compiled modules
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache build .coverage .coverage.*
	rm -f streams/domain/*.so upstream_domain__mypyc*.so
