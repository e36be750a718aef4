# Two entry points for a fresh machine with Python 3.11+ and make: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
EA := ../$(BIN)/email-automation
# A second venv with the oldest release pyproject.toml allows of each direct dependency.
VENV_MIN ?= .venv-min

.PHONY: demo test test-fast test-min bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dashboard]'
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dashboard,dev]'
	@touch $@

# uv resolves the lowest allowed version of each direct dependency (pip cannot). Always a new venv:
# an installed newer release would satisfy the bound and be kept.
$(VENV_MIN)/.installed: pyproject.toml
	rm -rf $(VENV_MIN)
	$(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/pip install --quiet uv
	$(VENV_MIN)/bin/uv pip install --quiet --python $(VENV_MIN)/bin/python --resolution lowest-direct \
		-e '.[dashboard,dev]'
	@touch $@

# The main job on the embedded default: SQLite in ./demo, DRY_RUN (nothing leaves the machine).
demo: $(VENV)/.installed
	@mkdir -p $(DEMO_DIR)
	cd $(DEMO_DIR) && export DRY_RUN=true DELAY_SECONDS=0 SENDER_EMAIL="$${SENDER_EMAIL:-you@example.com}" \
		SENDER_NAME="$${SENDER_NAME:-Demo Sender}" && \
		$(EA) init && \
		$(EA) import ../examples/recipients.csv && \
		$(EA) run && \
		$(EA) status
	@echo
	@echo "The rendered messages are .eml files in the run's folder under $(DEMO_DIR)/outbox/ (open one in any mail client)."
	@echo "Watch it in the dashboard:  cd $(DEMO_DIR) && ../$(BIN)/email-automation dashboard"

# Every test, spread over the cores with pytest-xdist, one test file per worker at a time
# (loadfile): the browser tests share one dashboard server. Files go out in collection order
# (--no-loadscope-reorder), and tests/conftest.py puts the slow ones (kill loops, real browser)
# first, so they start at once instead of ending the run on one worker. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= auto
# The tests start about a hundred Python processes (kill loops, faketime, the CLI's start-up): with
# PYTHONDONTWRITEBYTECODE set in the environment each one would compile the package from source
# again, and pytest would rewrite every test module's asserts again (a quarter of the suite's CPU).
export PYTHONDONTWRITEBYTECODE :=
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The fast suite at the lower bounds of pyproject.toml: they stay true. The dashboard's browser
# test too: Streamlit's own test harness does not show everything a browser does.
test-min: $(VENV_MIN)/.installed
	$(VENV_MIN)/bin/python -m pytest -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)
	$(VENV_MIN)/bin/python -m pytest tests/e2e/test_dashboard_browser.py $(PYTEST_ARGS)

# mailmerge is the yardstick of bench_send and bench_cli: installed here, never a dependency.
bench: $(VENV)/.installed-dev
	$(BIN)/python -c "import mailmerge" 2>/dev/null || $(BIN)/pip install --quiet mailmerge
	@echo "== goal 1: DELAY_SECONDS=0 to a loopback sink, against mailmerge"
	$(BIN)/python benchmarks/bench_send.py --messages 600 --concurrency 8 --rounds 8
	$(BIN)/python benchmarks/bench_send.py --messages 2000 --concurrency 8
	@echo "== one at a time (SEND_CONCURRENCY=1), for comparison"
	$(BIN)/python benchmarks/bench_send.py --messages 600 --concurrency 1
	@echo "== goal 2: a sink that takes 50 ms per message, SEND_CONCURRENCY=16"
	$(BIN)/python benchmarks/bench_send.py --messages 300 --latency 0.05 --concurrency 16
	@echo "== goal 3: import (three interleaved runs: one run's baseline moved from 4.6 to 7.6 s within an hour on a VM)"
	$(BIN)/python benchmarks/bench_import.py --repeat 3
	@echo "== goal 4: --help and status against mailmerge --help"
	$(BIN)/python benchmarks/bench_cli.py
	@echo "== goal 5: dashboard queries"
	$(BIN)/python benchmarks/bench_dashboard.py
	$(BIN)/python benchmarks/bench_dashboard_render.py
	$(BIN)/python benchmarks/bench_run.py

clean:
	rm -rf $(VENV) $(VENV_MIN) $(DEMO_DIR) *.egg-info
