# The two commands a newcomer needs: `make demo` and `make test`.
# Both create the virtual environment on first use and install the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-fast fast lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pyderecho demo

# On every core too (pytest-xdist): the tests that wait on real time allow for a loaded machine.
test: $(STAMP)
	PYDERECHO_TEST_CORE=python $(BIN)/python -m pytest -q -n auto

# The fast build, in a venv of its own (`make fast`; the benchmarks run on it, so it has the
# `bench` extra too): uvloop's event loop (`pip install 'pyderecho[fast]'`),
# which `pyderecho node`, `BlockingGroup` and the benchmarks take when it is installed, and the
# core and the frame path (both transports, Member) compiled to C by mypyc
# (HATCH_BUILD_HOOK_ENABLE_MYPYC=true). The main venv keeps testing plain asyncio and the Python
# source, whose classes some tests patch. The install is not editable (the compiled modules live
# in the venv), so it is redone when a source changes.
FAST_VENV := .venv-fast
FAST_SOURCES := $(shell find src -name '*.py')
$(FAST_VENV)/.installed: pyproject.toml Makefile $(FAST_SOURCES)
	test -x $(FAST_VENV)/bin/python || $(PYTHON) -m venv $(FAST_VENV)
	$(FAST_VENV)/bin/python -m pip install --quiet --upgrade pip
	HATCH_BUILD_HOOK_ENABLE_MYPYC=true $(FAST_VENV)/bin/python -m pip install --quiet '.[test,fast,bench]'
	find src -name '*.so' -delete  # the build leaves its modules beside the source too
	touch $@
FAST_ENV := PYDERECHO_TEST_EVENT_LOOP=uvloop PYDERECHO_TEST_CORE=compiled
fast: $(FAST_VENV)/.installed

# Every default test again on the compiled build (those marked patches_compiled skip), then the
# transport and process tests on uvloop's loop too.
UVLOOP_TESTS := tests/test_tcp_transport.py tests/test_tcp_identify.py tests/test_shm_transport.py \
	tests/test_frame_receiver.py tests/test_runtime.py tests/test_processes.py \
	tests/test_join_settings.py tests/test_live_fuzz.py tests/test_group.py tests/test_group_processes.py \
	tests/test_paxos_group.py tests/test_paxos_restart.py tests/test_paxos_processes.py \
	tests/test_event_loop.py tests/test_quiet_beats.py
test-fast: $(FAST_VENV)/.installed
	PYDERECHO_TEST_CORE=compiled $(FAST_VENV)/bin/python -m pytest -q -n auto
	$(FAST_ENV) $(FAST_VENV)/bin/python -m pytest -q -n auto $(UVLOOP_TESTS)

# The long sweeps on every core (pytest-xdist), on the fast build: each seed is its own test.
test-slow: $(FAST_VENV)/.installed
	$(FAST_ENV) $(FAST_VENV)/bin/python -m pytest -q -m slow -n auto

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(FAST_VENV) build dist .pytest_cache .mypy_cache .ruff_cache
