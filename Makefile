# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Each creates .venv and installs what it needs from nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp
PYTEST_ARGS ?=
BENCH_ARGS ?=
# Anything that starts DDS participants runs here: a private network namespace with only
# loopback up, so DDS never reaches the network (see .ci/netns-run).
ISOLATED := .ci/netns-run
# The tests that use ROS 2 (rerun on Kilted by test-kilted).
ROS_TESTS := test/test_node.py test/test_node_live.py test/test_msgs_rclpy.py
KILTED_VENV ?= .venv-kilted
KILTED_STAMP := $(KILTED_VENV)/.deps-stamp

.PHONY: all venv test test-kilted demo bench lint format clean

all: test

$(STAMP): requirements.txt requirements-train.txt requirements-test.txt \
		requirements-test-ros.txt requirements-ros-jazzy.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Everything, DDS isolated; then the few tests that need the package registry, outside.
test: $(STAMP)
	$(ISOLATED) $(PY) -m pytest -m 'not registry' $(PYTEST_ARGS)
	$(PY) -m pytest -m registry $(PYTEST_ARGS)

# The ROS tests again on ROS 2 Kilted (rclpy 9) instead of Jazzy (rclpy 7).
$(KILTED_STAMP): requirements.txt requirements-test-ros.txt requirements-ros-kilted.txt setup.py
	$(PYTHON) -m venv $(KILTED_VENV)
	$(KILTED_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(KILTED_VENV)/bin/python -m pip install --quiet -r requirements.txt \
		-r requirements-ros-kilted.txt -r requirements-test-ros.txt
	$(KILTED_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(KILTED_STAMP)

test-kilted: $(KILTED_STAMP)
	$(ISOLATED) $(KILTED_VENV)/bin/python -m pytest $(ROS_TESTS) $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m training quickstart

bench: $(STAMP)
	$(ISOLATED) $(PY) -m training bench $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf build install log runs .pytest_cache .ruff_cache
