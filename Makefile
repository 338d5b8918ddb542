# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Each creates .venv and installs what it needs from nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp
PYTEST_ARGS ?=
BENCH_ARGS ?=
# Exact versions (constraints/): current ones for development and CI, and the oldest the
# robot's requirements.txt admits for the compatibility lane.
CURRENT := -c constraints/tools.txt -c constraints/runtime-current.txt
OLDEST := -c constraints/tools.txt -c constraints/runtime-oldest.txt
# Anything that starts DDS participants runs here: a private network namespace with only
# loopback up, so DDS never reaches the network (see .ci/netns-run).
ISOLATED := .ci/netns-run
# The tests of what a robot runs (no training stack): rerun on Kilted and on the oldest
# supported NumPy, OpenCV, ONNX Runtime and OpenVINO. ROS_TESTS are the ones that use ROS 2.
ROS_TESTS := test/test_node.py test/test_node_live.py test/test_msgs_rclpy.py \
	test/test_node_managed.py test/test_node_behaviour.py test/test_node_live_input.py \
	test/test_consumers.py test/test_rclpy_humble_api.py
RUNTIME_TESTS := $(ROS_TESTS) test/test_pipeline.py test/test_msgs.py test/test_msgs_cdr.py \
	test/test_geometry.py test/test_rectify.py test/test_engine_onnxruntime.py test/test_engine_cache.py \
	test/test_bag.py test/test_bag_recovery.py test/test_worker.py test/test_params.py \
	test/test_node_diagnostics.py test/test_fileio.py test/test_launch.py test/test_bench_measure.py
LANE_REQUIREMENTS := -r requirements-venv.txt -r requirements-test-runtime.txt \
	-r requirements-openvino.txt

.PHONY: all venv test test-kilted test-compat demo finetune-demo bench config lint format clean

all: test

$(STAMP): requirements.txt requirements-venv.txt requirements-train.txt requirements-test.txt \
		requirements-openvino.txt requirements-test-runtime.txt requirements-ros-jazzy.txt \
		constraints/*.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt $(CURRENT)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Everything, DDS isolated; then the few tests that need the package registry, outside.
test: $(STAMP)
	$(ISOLATED) $(PY) -m pytest -m 'not registry' $(PYTEST_ARGS)
	$(PY) -m pytest -m registry $(PYTEST_ARGS)

# A lane: a venv of its own with the runtime, a ROS 2 distribution and the test tools.
# $(call lane,VENV,ROS REQUIREMENTS,CONSTRAINTS)
define lane
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet $(LANE_REQUIREMENTS) -r $(2) $(3)
	$(1)/bin/python -m pip install --quiet --no-deps -e .
	touch $(1)/.deps-stamp
endef

.venv-kilted/.deps-stamp: requirements.txt requirements-venv.txt requirements-test-runtime.txt \
		requirements-openvino.txt requirements-ros-kilted.txt constraints/*.txt setup.py
	$(call lane,.venv-kilted,requirements-ros-kilted.txt,$(CURRENT))

.venv-compat/.deps-stamp: requirements.txt requirements-venv.txt requirements-test-runtime.txt \
		requirements-openvino.txt requirements-ros-jazzy.txt constraints/*.txt setup.py
	$(call lane,.venv-compat,requirements-ros-jazzy.txt,$(OLDEST))

# The ROS tests again on ROS 2 Kilted (rclpy 9) instead of Jazzy (rclpy 7).
test-kilted: .venv-kilted/.deps-stamp
	$(ISOLATED) .venv-kilted/bin/python -m pytest $(ROS_TESTS) $(PYTEST_ARGS)

# The runtime tests on Jazzy's system versions: NumPy 1.26, OpenCV 4.6, and the oldest
# ONNX Runtime and rosbags requirements.txt admits.
test-compat: .venv-compat/.deps-stamp
	$(ISOLATED) .venv-compat/bin/python -m pytest $(RUNTIME_TESTS) $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m training quickstart

# Fine-tune the quickstart model on a synthetic ground-robot RGB-D recording (README:
# "Fine-tune on your robot's recordings"); runs the quickstart first if its model is missing.
finetune-demo: $(STAMP)
	test -f runs/quickstart/model.safetensors || $(PY) -m training quickstart
	$(PY) -m training finetune-demo --base runs/quickstart/model.safetensors

bench: $(STAMP)
	$(ISOLATED) $(PY) -m tools.bench all --readme README.md $(BENCH_ARGS)

# config/moa_depth.yaml is generated from the parameter specs (moa_depth_ros/runtime/params.py).
config: $(STAMP)
	$(PY) -m moa_depth_ros.runtime.params config/moa_depth.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf build install log runs .pytest_cache .ruff_cache

# GPU acceptance of the TensorRT backend, on a machine with an NVIDIA GPU (a desktop with a
# CUDA 12 or 13 driver, or a Jetson with JetPack 6.1/6.2): builds .venv-gpu-LANE for this
# machine (TRT=10 or 11 on a desktop, default 11) and runs test/gpu_acceptance.sh in it;
# the result is runs/gpu-acceptance/gpu_acceptance.json.
.PHONY: gpu-acceptance
gpu-acceptance:
	test/gpu_acceptance.sh --install $(GPU_ARGS)
