# The two commands a newcomer needs: `make demo` and `make test`.
# Both create the virtual environment on first use and install the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-uvloop lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pyderecho demo

# On every core too (pytest-xdist): the tests that wait on real time allow for a loaded machine.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto

# The long sweeps on every core (pytest-xdist): each seed is its own test.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow -n auto

# The transports and real processes again on uvloop's event loop, which `pyderecho node` uses
# when uvloop is installed (pip install 'pyderecho[fast]'); in a venv of its own, so that the
# main one keeps testing plain asyncio.
UVLOOP_VENV := .venv-uvloop
UVLOOP_TESTS := tests/test_tcp_transport.py tests/test_tcp_identify.py tests/test_shm_transport.py \
	tests/test_frame_receiver.py tests/test_runtime.py tests/test_processes.py \
	tests/test_join_settings.py tests/test_live_fuzz.py tests/test_group.py tests/test_group_processes.py \
	tests/test_paxos_group.py tests/test_paxos_restart.py tests/test_paxos_processes.py \
	tests/test_event_loop.py
$(UVLOOP_VENV)/.installed: pyproject.toml
	test -x $(UVLOOP_VENV)/bin/python || $(PYTHON) -m venv $(UVLOOP_VENV)
	$(UVLOOP_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(UVLOOP_VENV)/bin/python -m pip install --quiet -e '.[test,fast]'
	touch $@

test-uvloop: $(UVLOOP_VENV)/.installed
	PYDERECHO_TEST_EVENT_LOOP=uvloop $(UVLOOP_VENV)/bin/python -m pytest -q -n auto $(UVLOOP_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(UVLOOP_VENV) build dist .pytest_cache .mypy_cache .ruff_cache
