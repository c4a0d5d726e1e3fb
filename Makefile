# The two newcomer commands are `make demo` and `make test`; both build .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test check lint unit browser promtool demo bench bench-nginx chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		(echo "Python 3.11 or newer is required" >&2; exit 1)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: lint browser promtool unit

# The fast loop: lint, types, and the tests that start no process or server and are not marked
# slow (under a minute).
check: lint $(STAMP)
	$(PY) -m pytest -q -m "not process and not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q

# The web console's tests drive a headless Chromium: Debian's `chromium` and its matching
# `chromium-driver`, installed from the OS packages when missing (never downloaded otherwise).
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends chromium chromium-driver)

# The deploy/ alert rules are checked with `promtool check rules` by the suite; promtool comes
# from the OS packages (Debian's `prometheus`), installed here when missing. Installing it in a
# container starts no Prometheus server (no init system runs the package's service).
promtool:
	@command -v promtool >/dev/null 2>&1 || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends prometheus)

demo: $(STAMP)
	$(PY) -m daemon.demo

$(VENV)/.bench-stamp: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(VENV)/.bench-stamp

# The streaming benchmark compares the daemon with nginx from the OS packages (Debian's `nginx`,
# the core server). It starts its own nginx on a free loopback port, never the system's service.
bench-nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends nginx)

bench: $(VENV)/.bench-stamp bench-nginx
	$(PY) -m bench

chaos: $(STAMP)
	$(PY) -m pytest -q tests/reliability/test_chaos.py --chaos-iterations=30

clean:
	rm -rf $(VENV) demo-data
