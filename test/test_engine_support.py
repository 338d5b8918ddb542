"""Shared fixtures of the engine tests: a tiny stand-in depth model, a fake ``tensorrt``.

``TinyDepthNet`` follows the DepthModel contract (forward -> (depth_m, confidence),
model_name, input_hw, depth range, describe()) in a few hundred parameters, with a LayerNorm
and a softmax over depth bins like the real heads.

``make_fake_tensorrt`` builds a module with the TensorRT 10 Python API surface the builder
and runtime use (same names and signatures: Builder, OnnxParser, IBuilderConfig,
Runtime.deserialize_cuda_engine, the name-based I/O tensor API, execute_async_v3). Its
"engine" runs the ONNX file with ONNX Runtime (outputs rounded through float16 for an FP16
build), and ``FakeCuda`` keeps "device memory" in numpy arrays, so every line of the
TensorRT code paths executes on a machine without TensorRT or a GPU.
"""

from __future__ import annotations

import enum
import json
import threading
import types

import numpy as np
import torch

_FAKE_MAGIC = b'FAKETRT1'


class TinyDepthNet(torch.nn.Module):
    """A stand-in DepthModel: conv, LayerNorm, per-pixel softmax over depth bins."""

    model_name = 'tiny_standin'

    def __init__(self, input_hw=(24, 32), min_depth_m=0.25, max_depth_m=8.0, bins=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.input_hw = tuple(input_hw)
        self.min_depth_m = float(min_depth_m)
        self.max_depth_m = float(max_depth_m)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Conv2d(8, bins, 1)
        centers = torch.linspace(self.min_depth_m, self.max_depth_m, bins).view(1, bins, 1, 1)
        self.register_buffer('bin_centers_m', centers)
        self.register_buffer('mean', torch.tensor([0.48, 0.46, 0.41]).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor([0.27, 0.26, 0.28]).view(1, 3, 1, 1))

    def forward(self, image):
        x = (image - self.mean) / self.std
        x = torch.relu(self.stem(x))
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        prob = torch.softmax(self.head(x), dim=1)
        depth = (prob * self.bin_centers_m).sum(dim=1, keepdim=True)
        confidence = prob.amax(dim=1, keepdim=True)
        return depth, confidence

    def describe(self):
        config_json = json.dumps({'input_hw': list(self.input_hw), 'bins': 8}, sort_keys=True)
        return {
            'model_name': self.model_name,
            'input_height': str(self.input_hw[0]),
            'input_width': str(self.input_hw[1]),
            'min_depth_m': repr(self.min_depth_m),
            'max_depth_m': repr(self.max_depth_m),
            'config_json': config_json,
            'config_digest': 'standin-digest',
        }


def random_image(input_hw, batch=1, seed=0):
    """Return a float32 [batch, 3, H, W] image in [0, 1]."""
    rng = np.random.default_rng(seed)
    return rng.random((batch, 3, *input_hw), dtype=np.float32)


# --- fake CUDA -----------------------------------------------------------------------------


class FakeCuda:
    """``CudaApi`` with 'device memory' in numpy arrays keyed by fake pointers."""

    def __init__(self, name='NVIDIA Fake GPU'):
        self.name = name
        self.memory = {}
        self.streams = set()
        self._next = 0x1000
        # Threads that made this device current (CUDA keeps the current device per thread).
        self.active_threads = set()

    def device_name(self):
        return self.name

    def activate(self):
        self.active_threads.add(threading.get_ident())

    def is_current(self):
        return threading.get_ident() in self.active_threads

    def alloc(self, nbytes):
        ptr = self._next
        self._next += int(nbytes) + 256
        self.memory[ptr] = np.zeros(int(nbytes), dtype=np.uint8)
        return ptr

    def free(self, ptr):
        del self.memory[ptr]

    def create_stream(self):
        handle = 0x7000 + len(self.streams) + 1
        self.streams.add(handle)
        return handle

    def destroy_stream(self, stream):
        self.streams.remove(stream)

    def copy_to_device(self, ptr, host, stream):
        assert stream in self.streams
        raw = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
        self.memory[ptr][: raw.size] = raw

    def copy_to_host(self, host, ptr, stream):
        assert stream in self.streams
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


# --- fake TensorRT 10 ----------------------------------------------------------------------


def make_fake_tensorrt(version='10.3.0', fast_fp16=True, cuda=None, fail_build=False):
    """Return a module object mimicking ``tensorrt`` 10 for the builder and runtime."""
    import onnx
    import onnxruntime as ort

    trt = types.ModuleType('tensorrt')
    trt.__version__ = version
    trt.builds = []  # every IBuilderConfig passed to build_serialized_network

    class DataType(enum.Enum):
        FLOAT = 0
        HALF = 1

    class LayerType(enum.Enum):
        CONVOLUTION = 0
        NORMALIZATION = 1
        SOFTMAX = 2
        ELEMENTWISE = 3
        SHUFFLE = 4

    class BuilderFlag(enum.Enum):
        FP16 = 0
        INT8 = 1
        OBEY_PRECISION_CONSTRAINTS = 9
        PREFER_PRECISION_CONSTRAINTS = 10

    class MemoryPoolType(enum.Enum):
        WORKSPACE = 0

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
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16}[dtype]

    class Tensor:
        def __init__(self, name, shape, dtype=DataType.FLOAT):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype

    class Layer:
        def __init__(self, name, layer_type):
            self.name = name
            self.type = layer_type
            self.num_inputs = 1
            self.num_outputs = 1
            self.precision = DataType.FLOAT
            self.output_types = {}
            self.precision_was_set = False

        def __setattr__(self, key, value):
            if key == 'precision' and hasattr(self, 'precision'):
                object.__setattr__(self, 'precision_was_set', True)
            object.__setattr__(self, key, value)

        def set_output_type(self, index, dtype):
            if not 0 <= index < self.num_outputs:
                raise IndexError(index)
            self.output_types[index] = dtype

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.inputs, self.outputs, self.layers = [], [], []
            self.onnx_path = None

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

    op_types = {
        'LayerNormalization': LayerType.NORMALIZATION,
        'Softmax': LayerType.SOFTMAX,
        'Conv': LayerType.CONVOLUTION,
        'Transpose': LayerType.SHUFFLE,
    }

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
            for value in graph.input:
                if value.name not in initializers:
                    self.network.inputs.append(Tensor(value.name, _dims(value)))
            for value in graph.output:
                self.network.outputs.append(Tensor(value.name, _dims(value)))
            for i, node in enumerate(graph.node):
                layer_type = op_types.get(node.op_type, LayerType.ELEMENTWISE)
                self.network.layers.append(Layer(node.name or f'node_{i}', layer_type))
            self.network.onnx_path = model
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
            self.flags = set()
            self.pool_limits = {}
            self.profiles = []
            self.timing_cache = None

        def set_memory_pool_limit(self, pool, pool_size):
            self.pool_limits[pool] = pool_size

        def set_flag(self, flag):
            self.flags.add(flag)

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

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        platform_has_fast_fp16 = property(lambda self: fast_fp16)

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.builds.append((network, config))
            if fail_build:
                return None
            shape = list(network.inputs[0].shape)
            profile = None
            if shape[0] < 0:
                if not config.profiles:
                    return None  # the real builder errors: dynamic input without profile
                profile = [list(s) for s in config.profiles[0].shapes['image']]
            header = {
                'version': version,
                'fp16': BuilderFlag.FP16 in config.flags,
                'input_shape': shape,
                'profile': profile,
                'inputs': [t.name for t in network.inputs],
                'outputs': [[t.name, list(t.shape)] for t in network.outputs],
            }
            with open(network.onnx_path, 'rb') as f:
                onnx_bytes = f.read()
            blob = json.dumps(header).encode()
            return HostMemory(_FAKE_MAGIC + len(blob).to_bytes(4, 'little') + blob + onnx_bytes)

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
            image = mem.read(self.addresses['image'], np.float32, self.input_shape)
            names = [name for name, _ in self.engine.header['outputs']]
            results = self.engine.session.run(names, {'image': image.copy()})
            for name, value in zip(names, results):
                if self.engine.header['fp16']:
                    value = value.astype(np.float16).astype(np.float32)
                mem.write(self.addresses[name], value)
            trt.executions.append(int(stream_handle))
            return True

    class Engine:
        def __init__(self, header, onnx_bytes):
            self.header = header
            self.cuda = cuda
            self.session = ort.InferenceSession(onnx_bytes, providers=['CPUExecutionProvider'])
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

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(serialized_engine)
            if not data.startswith(_FAKE_MAGIC):
                return None
            size = int.from_bytes(data[8:12], 'little')
            header = json.loads(data[12 : 12 + size])
            if header['version'] != version:
                return None
            return Engine(header, data[12 + size :])

    trt.executions = []
    for name, value in list(locals().items()):
        if isinstance(value, type) or name == 'nptype':
            setattr(trt, name, value)
    trt.float32 = DataType.FLOAT
    trt.float16 = DataType.HALF
    trt.IHostMemory = HostMemory
    return trt
