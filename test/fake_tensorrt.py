"""A fake ``tensorrt`` (10.x weakly typed or 11.x strongly typed) and a fake CUDA device.

``make_fake_tensorrt(version)`` returns a module with the Python API surface the builder and
runtime use, as the real release has it:

- 10.x: ``BuilderFlag.FP16`` / ``OBEY_PRECISION_CONSTRAINTS`` / ``TF32``, ``ILayer.precision``
  and ``set_output_type``, ``Builder.platform_has_fast_fp16``.
- 11.x: none of those but ``TF32`` (accessing them raises AttributeError, as in the real
  module); every network is strongly typed and computes in the types its ONNX states.

The "engine" runs the ONNX with ONNX Runtime, emulating FP16 through the layers: every layer
that the build would run in FP16 has its float inputs and outputs rounded to FP16 (overflow
to inf included), and a ReduceL2 in FP16 becomes the sum of squares TensorRT lowers it to,
which overflows past 65504. Layers kept in FP32 (LayerNorm, which the ONNX parser computes
in FP32; layers pinned with OBEY_PRECISION_CONSTRAINTS; FP32 nodes of a strongly typed
graph) are not rounded. So FP16 accuracy can fail here the way it fails on a GPU.

``FakeCuda`` keeps "device memory" in numpy arrays, tracks the current device per thread
(the builder builds for, and the runtime runs on, the current device), hands out "pinned"
host memory and counts copies from pageable memory. Device memory and streams belong to a
device: as the CUDA runtime (cudaMalloc, cudaFree, cudaStreamCreate, cudaStreamDestroy act
on the calling thread's current device), the fake refuses them unless its device is current.
Nothing here imports torch, so a child process can load it quickly.
"""

from __future__ import annotations

import atexit
import enum
import importlib.machinery
import json
import os
import sys
import threading
import time
import types

import numpy as np
import onnx
from onnx import helper, numpy_helper
import onnxruntime as ort

from moa_depth_ros.engine.cache import GpuInfo

_FAKE_MAGIC = b'FAKETRT1'
_CURRENT = threading.local()
_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT, FLOAT16


def log_to_stdout(severity, message):
    """Write one line as TensorRT's default Python logger does: to stdout.

    NVIDIA/TensorRT python/src/infer/pyCore.cpp, ``DefaultLogger::log``: ``std::cout <<
    "[TRT] [W] " << msg << std::endl``. C++ writes straight to the file descriptor, so a
    message logged once Python has flushed its own stdout (objects destroyed as the
    interpreter exits) comes after anything the script printed.
    """
    sys.stdout.flush()
    stamp = time.strftime('%m/%d/%Y-%H:%M:%S')
    os.write(1, f'[{stamp}] [TRT] [{severity}] {message}\n'.encode())


def current_cuda():
    """Return the FakeCuda made current on this thread, or None."""
    return getattr(_CURRENT, 'cuda', None)


class FakeCuda:
    """``CudaApi`` with 'device memory' in numpy arrays keyed by fake pointers."""

    def __init__(
        self,
        name='NVIDIA Fake GPU',
        index=0,
        compute_capability='8.7',
        sm_count=16,
        total_memory_bytes=8 << 30,
    ):
        self.name = name
        self.device_index = index
        self.compute_capability = compute_capability
        self.sm_count = sm_count
        self.total_memory_bytes = total_memory_bytes
        self.memory = {}
        self.pinned = {}  # base pointer -> array
        self.pageable_copies = 0
        self.streams = set()
        self._next = 0x1000
        # Threads that made this device current (CUDA keeps the current device per thread).
        self.active_threads = set()

    def device_info(self):
        return GpuInfo(self.name, self.compute_capability, self.sm_count, self.total_memory_bytes)

    def activate(self):
        _CURRENT.cuda = self
        self.active_threads.add(threading.get_ident())

    def is_current(self):
        return current_cuda() is self

    def _require_current(self, what):
        if not self.is_current():
            current = current_cuda()
            raise RuntimeError(
                f'{what} for cuda:{self.device_index} while cuda:'
                f'{"none" if current is None else current.device_index} is current'
            )

    def alloc(self, nbytes):
        self._require_current('cudaMalloc')
        ptr = self._next
        self._next += int(nbytes) + 256
        self.memory[ptr] = np.zeros(int(nbytes), dtype=np.uint8)
        return ptr

    def free(self, ptr):
        self._require_current('cudaFree')
        del self.memory[ptr]

    def alloc_host(self, nbytes):
        array = np.zeros(max(int(nbytes), 1), dtype=np.uint8)
        self.pinned[array.ctypes.data] = array
        return array

    def free_host(self, array):
        del self.pinned[array.ctypes.data]

    def _count_pageable(self, host):
        start = host.ctypes.data
        for base, block in self.pinned.items():
            if base <= start and start + host.nbytes <= base + block.nbytes:
                return
        self.pageable_copies += 1

    def create_stream(self):
        self._require_current('cudaStreamCreate')
        handle = 0x7000 + len(self.streams) + 1
        while handle in self.streams:
            handle += 1
        self.streams.add(handle)
        return handle

    def destroy_stream(self, stream):
        self._require_current('cudaStreamDestroy')
        self.streams.remove(stream)

    def copy_to_device(self, ptr, host, stream):
        assert stream in self.streams
        self._count_pageable(host)
        raw = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
        self.memory[ptr][: raw.size] = raw

    def copy_to_host(self, host, ptr, stream):
        assert stream in self.streams
        self._count_pageable(host)
        raw = host.reshape(-1).view(np.uint8)
        raw[:] = self.memory[ptr][: raw.size]

    def synchronize(self, stream):
        assert stream in self.streams

    def read(self, ptr, dtype, shape):
        count = int(np.prod(shape))
        return self.memory[ptr][: count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)

    def write(self, ptr, array):
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        self.memory[ptr][: raw.size] = raw


# --- FP16 emulation over ONNX graphs -------------------------------------------------------


def node_key(node, index):
    return node.name or f'{node.op_type}_{index}'


def _elem_types(model):
    graph = onnx.shape_inference.infer_shapes(model).graph
    types_ = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)}
    types_.update({v.name: v.type.tensor_type.elem_type for v in graph.value_info})
    types_.update({t.name: t.data_type for t in graph.initializer})
    return types_


def emulate_fp16(model, fp16_nodes, round_inputs=True):
    """Return an FP32 copy of ``model`` whose ``fp16_nodes`` round through FP16.

    ``round_inputs``: round the FP32 inputs of FP16 nodes too (weak typing converts them;
    a strongly typed graph states its casts, so its inputs are FP16 values already).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    floats = {name for name, t in _elem_types(model).items() if t == _FLOAT}
    initializers = {t.name: t for t in graph.initializer}
    nodes = []
    rounded = {}

    def round_trip(src, dst):
        nodes.append(helper.make_node('Cast', [src], [f'{dst}__h'], to=_FLOAT16))
        nodes.append(helper.make_node('Cast', [f'{dst}__h'], [dst], to=_FLOAT))

    def rounded_input(name):
        if name not in rounded:
            new = f'{name}__r16'
            if name in initializers:
                array = numpy_helper.to_array(initializers[name])
                array = array.astype(np.float16).astype(np.float32)
                graph.initializer.append(numpy_helper.from_array(array, new))
            else:
                round_trip(name, new)
            rounded[name] = new
        return rounded[name]

    produced_fp16 = set()
    for index, node in enumerate(list(graph.node)):
        if node_key(node, index) not in fp16_nodes:
            nodes.append(node)
            continue
        for i, name in enumerate(node.input):
            fixed = node.op_type == 'Resize' and i > 0
            if round_inputs and name in floats and name not in produced_fp16 and not fixed:
                node.input[i] = rounded_input(name)
        outputs = list(node.output)
        for j, name in enumerate(outputs):
            if name in floats:
                node.output[j] = f'{name}__f32'
        if node.op_type == 'ReduceL2':
            # TensorRT lowers it to squares, a sum and a square root: the sum is FP16 too.
            sum_sq = helper.make_node('ReduceSumSquare', list(node.input), [f'{outputs[0]}__ss'])
            sum_sq.attribute.extend(node.attribute)
            nodes.append(sum_sq)
            round_trip(f'{outputs[0]}__ss', f'{outputs[0]}__ss16')
            nodes.append(helper.make_node('Sqrt', [f'{outputs[0]}__ss16'], [node.output[0]]))
        else:
            nodes.append(node)
        for j, name in enumerate(outputs):
            if name in floats:
                round_trip(node.output[j], name)
                produced_fp16.add(name)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input} | {v.name for v in graph.input}
    live = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    return out


def strongly_typed_emulation(model):
    """Return an FP32 graph and the FP16 nodes that compute like a strongly typed ``model``."""
    types_ = _elem_types(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    fp16_nodes = set()
    for index, node in enumerate(graph.node):
        key = node_key(node, index)
        if node.op_type == 'Cast':
            for attribute in node.attribute:
                if attribute.name == 'to' and attribute.i == _FLOAT16:
                    attribute.i = _FLOAT  # computes FP32 here, rounded as an FP16 node
                    fp16_nodes.add(key)
            continue
        if node.op_type == 'Constant':
            for attribute in node.attribute:
                if attribute.t.data_type == _FLOAT16:
                    array = numpy_helper.to_array(attribute.t).astype(np.float32)
                    attribute.t.CopyFrom(numpy_helper.from_array(array, attribute.t.name))
        if any(types_.get(name) == _FLOAT16 for name in node.output):
            fp16_nodes.add(key)
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == _FLOAT16:
            array = numpy_helper.to_array(tensor).astype(np.float32)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(array, tensor.name))
    for value in (*graph.input, *graph.output):
        if value.type.tensor_type.elem_type == _FLOAT16:
            value.type.tensor_type.elem_type = _FLOAT
    del graph.value_info[:]
    return out, fp16_nodes


# --- fake TensorRT ---------------------------------------------------------------------------

_LAYER_TYPES = {
    'CONVOLUTION': ('Conv', 'ConvTranspose'),
    'NORMALIZATION': ('LayerNormalization', 'InstanceNormalization', 'GroupNormalization'),
    'SOFTMAX': ('Softmax', 'LogSoftmax'),
    'REDUCE': ('ReduceL1', 'ReduceL2', 'ReduceMax', 'ReduceMean', 'ReduceMin', 'ReduceSum',
               'ReduceSumSquare', 'ReduceProd'),
    'UNARY': ('Exp', 'Log', 'Sqrt', 'Erf', 'Abs', 'Neg', 'Reciprocal', 'Sin', 'Cos', 'Floor',
              'Ceil', 'Not'),
    'MATRIX_MULTIPLY': ('MatMul', 'Gemm', 'Einsum'),
    'ACTIVATION': ('Relu', 'Sigmoid', 'Tanh', 'Clip', 'LeakyRelu', 'Elu', 'Softplus'),
    'SHUFFLE': ('Transpose', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze'),
    'CONSTANT': ('Constant',),
    'CAST': ('Cast',),
    'RESIZE': ('Resize',),
}  # fmt: skip


# How the engine inspector's JSON may give a tensor's type, as NVIDIA's readers of it take
# it (see tensorrt_backend.TYPE_KEYS for the sources): precision ('fp16' / 'fp32') -> fields.
INSPECTOR_SPELLINGS = {
    # Polygraphy's reading: the type inside the format description.
    'format/datatype': lambda p: {
        'Format/Datatype': f'Row major linear {"FP16" if p == "fp16" else "FP32"} format'
    },
    # The same key without an execution context: the type alone.
    'format/datatype short': lambda p: {'Format/Datatype': 'Half' if p == 'fp16' else 'Float'},
    # TensorRT 11.1's trt-perf-analysis: "Datatype" beside "Format".
    'datatype': lambda p: {
        'Format': 'Row major linear',
        'Datatype': 'half' if p == 'fp16' else 'float',
    },
}


def make_fake_tensorrt(
    version='10.3.0',
    fast_fp16=True,
    cuda=None,
    fail_build=False,
    build_log=None,
    build_delay_s=0.0,
    inspector_spelling=None,
    exit_log=False,
):
    """Return a module object mimicking ``tensorrt`` ``version`` (10.x or 11.x).

    ``cuda``: the device used when no FakeCuda is current. ``build_log``: a file each build
    appends its pid to (then sleeps ``build_delay_s``), to count builds across processes.
    ``inspector_spelling``: a key of ``INSPECTOR_SPELLINGS`` (default: "format/datatype"
    for 10.x, "datatype" for 11.x). ``exit_log``: log a warning as the process exits, after
    Python flushed its own stdout (see ``log_to_stdout``).
    """
    major = int(version.split('.')[0])
    weak = major < 11
    if inspector_spelling is None:
        inspector_spelling = 'format/datatype' if weak else 'datatype'
    if inspector_spelling not in INSPECTOR_SPELLINGS:
        raise ValueError(f'inspector_spelling must be one of {list(INSPECTOR_SPELLINGS)}')
    default_cuda = cuda or FakeCuda()
    trt = types.ModuleType('tensorrt')
    # A spec as an imported module has (torch's dynamo looks tensorrt up with find_spec).
    trt.__spec__ = importlib.machinery.ModuleSpec('tensorrt', None)
    trt.__version__ = version
    trt.builds = []  # (network, config) of every build_serialized_network call
    trt.executions = []
    if exit_log:
        atexit.register(log_to_stdout, 'W', 'a warning logged while the process exits')

    class DataType(enum.Enum):
        FLOAT = 0
        HALF = 1
        BOOL = 4

    LayerType = enum.Enum('LayerType', [*_LAYER_TYPES, 'ELEMENTWISE'])  # noqa: N806
    op_types = {op: LayerType[name] for name, ops in _LAYER_TYPES.items() for op in ops}

    flag_names = ['DEBUG', 'GPU_FALLBACK', 'REFIT', 'DISABLE_TIMING_CACHE', 'TF32']
    if weak:
        flag_names += ['FP16', 'INT8', 'BF16', 'OBEY_PRECISION_CONSTRAINTS',
                       'PREFER_PRECISION_CONSTRAINTS']  # fmt: skip
    BuilderFlag = enum.Enum('BuilderFlag', flag_names)  # noqa: N806

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 1

    class MemoryPoolType(enum.Enum):
        WORKSPACE = 0

    class ProfilingVerbosity(enum.Enum):
        LAYER_NAMES_ONLY = 0
        NONE = 1
        DETAILED = 2

    class LayerInformationFormat(enum.Enum):
        ONELINE = 0
        JSON = 1

    class TensorIOMode(enum.Enum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class Logger:
        class Severity(enum.IntEnum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3
            VERBOSE = 4

        INTERNAL_ERROR = Severity.INTERNAL_ERROR
        ERROR = Severity.ERROR
        WARNING = Severity.WARNING
        INFO = Severity.INFO
        VERBOSE = Severity.VERBOSE

        def __init__(self, min_severity=Severity.WARNING):
            self.min_severity = min_severity

    def nptype(dtype):
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.BOOL: np.bool_}[
            dtype
        ]

    class Tensor:
        def __init__(self, name, shape, dtype=DataType.FLOAT):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype

    class Layer11:
        """TensorRT 11's ILayer: no precision, no set_output_type (slots: none can be added)."""

        __slots__ = ('name', 'type', 'num_inputs', 'num_outputs', 'node_key', 'output_dtypes')

        def __init__(self, name, layer_type, num_outputs, key, output_dtypes=None):
            self.name, self.type, self.num_inputs = name, layer_type, 1
            self.num_outputs, self.node_key = num_outputs, key
            self.output_dtypes = output_dtypes or [DataType.FLOAT] * num_outputs

        def get_output(self, index):
            return Tensor(f'{self.name}_out{index}', (), self.output_dtypes[index])

    class Layer10(Layer11):
        """TensorRT 10's ILayer: precision and output types are weak-typing hints."""

        __slots__ = ('_precision', 'precision_was_set', 'output_types')

        def __init__(self, *args):
            super().__init__(*args)
            self._precision = DataType.FLOAT
            self.precision_was_set = False
            self.output_types = {}

        @property
        def precision(self):
            return self._precision

        @precision.setter
        def precision(self, value):
            self._precision = value
            self.precision_was_set = True

        def set_output_type(self, index, dtype):
            if not 0 <= index < self.num_outputs:
                raise IndexError(index)
            self.output_types[index] = dtype

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.strongly_typed = not weak or bool(
                flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))
            )
            self.inputs, self.outputs, self.layers = [], [], []
            self.model = None

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, index):
            return self.inputs[index]

        def get_output(self, index):
            return self.outputs[index]

        def get_layer(self, index):
            return self.layers[index]

    def _dims(value_info):
        dims = []
        for d in value_info.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField('dim_value') else -1)
        return dims

    class ParserError:
        def __init__(self, text):
            self.text = text

        def desc(self):
            return self.text

        def __str__(self):
            return f'In node -1 (parseGraph): INVALID_GRAPH: {self.text}'

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.logger, self.errors = network, logger, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, index):
            return self.errors[index]

        def parse_from_file(self, model):
            try:
                proto = onnx.load(model)
            except Exception as e:  # the real parser reports, it does not raise
                self.errors.append(ParserError(f'failed to parse ONNX model: {e}'))
                return False
            graph = proto.graph
            initializers = {i.name for i in graph.initializer}
            layer_class = Layer11 if self.network.strongly_typed else Layer10
            for value in graph.input:
                if value.name not in initializers:
                    self.network.inputs.append(Tensor(value.name, _dims(value)))
            for value in graph.output:
                self.network.outputs.append(Tensor(value.name, _dims(value)))
            types_ = _elem_types(proto)
            for i, node in enumerate(graph.node):
                layer_type = op_types.get(node.op_type, LayerType.ELEMENTWISE)
                key = node_key(node, i)
                dtypes = [
                    DataType.BOOL if types_.get(name) == onnx.TensorProto.BOOL else DataType.FLOAT
                    for name in node.output
                ]
                layer = layer_class(key, layer_type, len(node.output), key, dtypes)
                self.network.layers.append(layer)
            self.network.model = proto
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 - the real keyword names
            if not all(a <= b <= c for a, b, c in zip(min, opt, max)):
                raise ValueError('min <= opt <= max violated')
            self.shapes[input] = (tuple(min), tuple(opt), tuple(max))

    class HostMemory(bytes):
        """IHostMemory supports the buffer protocol; bytes does too."""

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)
            self.loaded_from = bytes(data)

        def serialize(self):
            return HostMemory(b'TIMING:' + version.encode() + b':' + self.data[-16:])

    class BuilderConfig:
        def __init__(self):
            self.flags = {BuilderFlag.TF32}  # TensorRT enables TF32 by default
            self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
            self.pool_limits = {}
            self.profiles = []
            self.timing_cache = None

        def set_memory_pool_limit(self, pool, pool_size):
            self.pool_limits[pool] = pool_size

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

        def get_flag(self, flag):
            return flag in self.flags

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            return TimingCache(serialized_timing_cache)

        def set_timing_cache(self, cache, ignore_mismatch):
            if cache.data and not cache.data.startswith(b'TIMING:' + version.encode()):
                return False
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

    def _weak_fp16_nodes(network, config):
        if BuilderFlag.FP16 not in config.flags:
            return set()
        obey = BuilderFlag.OBEY_PRECISION_CONSTRAINTS in config.flags
        fp16 = set()
        for layer in network.layers:
            if layer.type == LayerType.NORMALIZATION:
                continue  # the ONNX parser computes LayerNorm in FP32
            if obey and layer.precision_was_set and layer.precision == DataType.FLOAT:
                continue
            fp16.add(layer.node_key)
        return fp16

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        if weak:
            platform_has_fast_fp16 = property(lambda self: fast_fp16)

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.builds.append((network, config))
            if build_log is not None:
                with open(build_log, 'a') as f:
                    f.write(f'{os.getpid()}\n')
                time.sleep(build_delay_s)
            if fail_build:
                return None
            device = current_cuda() or default_cuda
            shape = list(network.inputs[0].shape)
            profile = None
            if shape[0] < 0:
                if not config.profiles:
                    return None  # the real builder errors: dynamic input without profile
                profile = [list(s) for s in config.profiles[0].shapes['image']]
            if network.strongly_typed:
                model, fp16_nodes = strongly_typed_emulation(network.model)
            else:
                model, fp16_nodes = network.model, _weak_fp16_nodes(network, config)
            if fp16_nodes:
                model = emulate_fp16(model, fp16_nodes, round_inputs=not network.strongly_typed)
            layers = [
                [layer.name, 'fp16' if layer.node_key in fp16_nodes else 'fp32']
                for layer in network.layers
            ]
            header = {
                'version': version,
                'layers': layers,
                'detailed': config.profiling_verbosity == ProfilingVerbosity.DETAILED,
                'gpu': device.device_info().name,
                'fp16_layers': len(fp16_nodes),
                'tf32': BuilderFlag.TF32 in config.flags,
                'input_shape': shape,
                'profile': profile,
                'inputs': [t.name for t in network.inputs],
                'outputs': [[t.name, list(t.shape)] for t in network.outputs],
            }
            blob = json.dumps(header).encode()
            return HostMemory(
                _FAKE_MAGIC + len(blob).to_bytes(4, 'little') + blob + model.SerializeToString()
            )

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.addresses = {}
            self.input_shape = tuple(engine.header['input_shape'])

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.header['profile'] or [self.input_shape] * 3
            if not all(a <= b <= c for a, b, c in zip(lo, shape, hi)):
                return False
            self.input_shape = tuple(shape)
            return True

        def set_tensor_address(self, name, memory):
            self.addresses[name] = int(memory)
            return True

        def get_tensor_shape(self, name):
            return (self.input_shape[0], *self.engine.get_tensor_shape(name)[1:])

        def execute_async_v3(self, stream_handle):
            mem = self.engine.cuda
            if any(d < 0 for d in self.input_shape) or not mem.is_current():
                return False  # the real one fails too on another thread's current device
            if int(stream_handle) not in mem.streams:
                return False
            image = mem.read(self.addresses['image'], np.float32, self.input_shape)
            names = [name for name, _ in self.engine.header['outputs']]
            results = self.engine.session.run(names, {'image': image.copy()})
            for name, value in zip(names, results):
                mem.write(self.addresses[name], value.astype(np.float32))
            trt.executions.append(int(stream_handle))
            return True

    class Engine:
        def __init__(self, header, onnx_bytes, device):
            self.header = header
            self.cuda = device
            options = ort.SessionOptions()
            # No graph rewrites: they must not fold the FP16 round trips away.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            options.log_severity_level = 3
            self.session = ort.InferenceSession(
                onnx_bytes, options, providers=['CPUExecutionProvider']
            )
            self.names = header['inputs'] + [name for name, _ in header['outputs']]
            self.shapes = {header['inputs'][0]: header['input_shape']}
            self.shapes.update(dict(header['outputs']))

        num_io_tensors = property(lambda self: len(self.names))

        def get_tensor_name(self, index):
            return self.names[index]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name in self.header['inputs'] else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return tuple(self.shapes[name])

        def get_tensor_dtype(self, name):
            return DataType.FLOAT

        def get_tensor_profile_shape(self, name, profile_index):
            return tuple(tuple(s) for s in self.header['profile'])

        def create_execution_context(self):
            return Context(self)

        def create_engine_inspector(self):
            return Inspector(self.header)

    class Inspector:
        def __init__(self, header):
            self.header = header

        def get_engine_information(self, format):  # noqa: A002 - the real keyword name
            assert format == LayerInformationFormat.JSON
            if not self.header['detailed']:
                return json.dumps({'Layers': [name for name, _ in self.header['layers']]})
            layers = []
            for name, precision in self.header['layers']:
                output = {'Name': name, **INSPECTOR_SPELLINGS[inspector_spelling](precision)}
                layers.append({'Name': name, 'Outputs': [output]})
            return json.dumps({'Layers': layers, 'Bindings': ['image', 'depth', 'confidence']})

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(serialized_engine)
            if not data.startswith(_FAKE_MAGIC):
                return None
            size = int.from_bytes(data[8:12], 'little')
            header = json.loads(data[12 : 12 + size])
            device = current_cuda() or default_cuda
            if header['version'] != version or header['gpu'] != device.device_info().name:
                return None  # the real runtime refuses a foreign engine too
            return Engine(header, data[12 + size :], device)

    for name, value in list(locals().items()):
        if isinstance(value, type) or name == 'nptype':
            setattr(trt, name, value)
    trt.LayerType = LayerType
    trt.BuilderFlag = BuilderFlag
    trt.float32 = DataType.FLOAT
    trt.float16 = DataType.HALF
    trt.IHostMemory = HostMemory
    return trt
