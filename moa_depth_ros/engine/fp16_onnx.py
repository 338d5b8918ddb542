"""An FP32 ONNX graph to a mixed FP16 one, for TensorRT's strongly typed networks.

TensorRT 11 removed weakly typed builds (``BuilderFlag.FP16``, layer precisions): a
network computes in the types its ONNX graph states. So an FP16 engine on TensorRT 11 is
built from a converted graph: compute nodes (convolutions, matrix products, activations,
element-wise arithmetic) in FP16, the graph's inputs and outputs kept FP32, and the op
types in ``keep_fp32_ops`` (LayerNorm always; reductions, softmax, exp/log when a parity
check asked for them) kept FP32, with a Cast wherever a tensor crosses between the two.

Constants are converted once, at conversion time, and a small constant (an epsilon, a clamp
bound) whose nonzero values FP16 would flush to zero is raised to FP16's smallest normal
instead: F.normalize's eps (1e-12) would otherwise become 0, and a zero-norm vector 0/0 = NaN.

Our own converter rather than a dependency: the graphs are this package's exports (no
control flow, opset 17), and the rules it needs fit in one page. Needs ``onnx``.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from moa_depth_ros.errors import EngineError

# Nodes that may compute in FP16. Everything else (Cast, Shape, Constant, Range, control
# flow, ...) keeps its original types.
FP16_OPS = frozenset(
    {
        'Abs', 'Add', 'AveragePool', 'BatchNormalization', 'Ceil', 'Clip', 'Concat', 'Conv',
        'ConvTranspose', 'Cos', 'Div', 'Einsum', 'Elu', 'Erf', 'Exp', 'Expand', 'Flatten',
        'Floor', 'Gather', 'Gemm', 'GlobalAveragePool', 'HardSigmoid', 'Identity',
        'LayerNormalization', 'LeakyRelu', 'Log', 'LogSoftmax', 'MatMul', 'Max', 'MaxPool',
        'Min', 'Mul', 'Neg', 'Pad', 'Pow', 'Reciprocal', 'ReduceL1', 'ReduceL2', 'ReduceMax',
        'ReduceMean', 'ReduceMin', 'ReduceSum', 'ReduceSumSquare', 'Relu', 'Reshape', 'Resize',
        'Sigmoid', 'Sin', 'Slice', 'Softmax', 'Softplus', 'Split', 'Sqrt', 'Squeeze', 'Sub',
        'Tanh', 'Tile', 'Transpose', 'Unsqueeze', 'Where',
    }
)  # fmt: skip
# Always FP32: the ONNX parser computes LayerNorm in FP32 under weak typing; under strong
# typing it follows the graph, so the graph must say so.
ALWAYS_FP32_OPS = ('LayerNormalization',)
# What a failed parity check moves to FP32 next: sums over many channels (DepthCLIP's
# F.normalize is a sum of 2048 squares, which overflows FP16 at an RMS of about 5.7) and
# the exponentials behind softmax and entropy.
SENSITIVE_FP32_OPS = (
    'LayerNormalization',
    'ReduceL1',
    'ReduceL2',
    'ReduceMean',
    'ReduceSum',
    'ReduceSumSquare',
    'Softmax',
    'LogSoftmax',
    'Exp',
    'Log',
    'Pow',
    'Sqrt',
)
# Inputs that stay as they are in an FP16 node (other type parameters than the output's).
_FIXED_INPUTS = {
    'Resize': {1, 2},  # roi, scales
    'Pow': {1},  # the exponent may have another type
    'BatchNormalization': {1, 2, 3, 4},  # scale, bias, mean, var (T1, T2 since opset 15)
}

_FLOAT = 1  # onnx.TensorProto.FLOAT
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16
# FP16's smallest normal, 2**-14. Not a subnormal: GPU kernels may flush FP16 subnormals to
# zero, which would bring the 0/0 back.
FP16_SMALLEST_NORMAL = float(np.finfo(np.float16).tiny)
# A constant of at most this many values is a scalar-like setting (eps, clamp bound, scale),
# whose tiny values matter; a weight tensor's tiny values are rounding noise, left to FP16.
SMALL_CONSTANT_SIZE = 64


def load_onnx() -> Any:
    """Import ``onnx`` or raise EngineError saying why it is needed."""
    try:
        import onnx
    except ImportError as e:
        raise EngineError(
            'an FP16 engine on TensorRT 11 is built from an FP16 ONNX graph, which needs the '
            '`onnx` package (pip install onnx); or build with precision fp32'
        ) from e
    return onnx


def _float_tensors(onnx: Any, model: Any) -> set[str]:
    """Names of the FP32 tensors in the graph (after ONNX shape/type inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    floats = set()
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type == _FLOAT:
            floats.add(value.name)
    floats.update(t.name for t in graph.initializer if t.data_type == _FLOAT)
    return floats


def fp16_constant(array: Any) -> np.ndarray:
    """Return ``array`` in FP16; a small constant's nonzero values never become zero.

    Values FP16 cannot hold apart from zero (below 2**-14 in magnitude) are raised to
    +-2**-14 when the constant has at most ``SMALL_CONSTANT_SIZE`` values: an epsilon must
    stay nonzero. Larger tensors (weights) are rounded as they are.
    """
    values = np.asarray(array, dtype=np.float32)
    if values.size <= SMALL_CONSTANT_SIZE:
        tiny = (values != 0) & (np.abs(values) < FP16_SMALLEST_NORMAL)
        values = np.where(tiny, np.copysign(FP16_SMALLEST_NORMAL, values), values)
    with np.errstate(over='ignore'):  # past 65504 is inf in FP16; the parity check judges it
        return values.astype(np.float16)


def _float_constants(graph: Any) -> dict[str, Any]:
    """Map each FP32 initializer and FP32 Constant node output to its value (numpy)."""
    from onnx import numpy_helper

    constants = {t.name: t for t in graph.initializer if t.data_type == _FLOAT}
    values = {name: (lambda t=t: numpy_helper.to_array(t)) for name, t in constants.items()}
    for node in graph.node:
        if node.op_type != 'Constant' or len(node.output) != 1:
            continue
        for attribute in node.attribute:
            if attribute.name == 'value' and attribute.t.data_type == _FLOAT:
                values[node.output[0]] = lambda t=attribute.t: numpy_helper.to_array(t)
            elif attribute.name == 'value_float':
                values[node.output[0]] = lambda f=attribute.f: np.float32(f)
            elif attribute.name == 'value_floats':
                values[node.output[0]] = lambda fs=attribute.floats: np.asarray(fs, np.float32)
    return values


def convert_to_fp16(
    model: Any, keep_fp32_ops: Iterable[str] = ALWAYS_FP32_OPS
) -> tuple[Any, list[str]]:
    """Return (a copy of ``model`` computing in FP16, names of compute nodes kept in FP32).

    Graph inputs and outputs stay FP32, and so do nodes of the ``keep_fp32_ops`` types.
    """
    onnx = load_onnx()
    from onnx import helper, numpy_helper

    keep = set(keep_fp32_ops)
    unknown = keep - FP16_OPS
    if unknown:
        raise EngineError(f'keep_fp32_ops names op types the converter does not know: {unknown}')
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if any(a.type in (a.GRAPH, a.GRAPHS) for node in graph.node for a in node.attribute):
        raise EngineError('the FP16 converter does not handle control flow (If/Loop/Scan)')
    floats = _float_tensors(onnx, model)
    constants = _float_constants(graph)
    # Where each float tensor lives: 'fp16' if an FP16 node produced it, else 'fp32'.
    home: dict[str, str] = dict.fromkeys(floats, 'fp32')
    new_nodes = []
    casts: dict[tuple[str, str], str] = {}  # (tensor, target) -> cast output name
    kept_fp32: list[str] = []

    def cast(name: str, target: str) -> str:
        if (name, target) in casts:
            return casts[(name, target)]
        if target == 'fp16' and name in constants:
            # Convert a weight or constant once instead of casting it at run time (a Cast
            # node would flush an eps of 1e-12 to zero).
            new_name = f'{name}__fp16'
            array = fp16_constant(constants[name]())
            graph.initializer.append(numpy_helper.from_array(array, new_name))
        else:
            new_name = f'{name}__to_{target}'
            to = _FLOAT16 if target == 'fp16' else _FLOAT
            new_nodes.append(
                helper.make_node('Cast', [name], [new_name], name=f'{new_name}_cast', to=to)
            )
        casts[(name, target)] = new_name
        return new_name

    for node in graph.node:
        data_floats = [n for n in (*node.input, *node.output) if n in floats]
        fp16 = node.op_type in FP16_OPS and node.op_type not in keep and bool(data_floats)
        fixed = _FIXED_INPUTS.get(node.op_type, set()) if fp16 else set()
        for i, name in enumerate(node.input):
            if name not in floats:
                continue
            want = 'fp16' if fp16 and i not in fixed else 'fp32'
            if home[name] != want:
                node.input[i] = cast(name, want)
        new_nodes.append(node)
        for name in node.output:
            if name in floats:
                home[name] = 'fp16' if fp16 else 'fp32'
        if not fp16 and node.op_type in FP16_OPS and data_floats:
            kept_fp32.append(node.name or node.output[0])
    # Graph outputs stay FP32: rename an FP16 producer's output and cast it back. (Over a
    # snapshot of the nodes: the casts appended here produce those names again.)
    outputs = {v.name for v in graph.output}
    for node in list(new_nodes):
        for i, name in enumerate(node.output):
            if name in outputs and home.get(name) == 'fp16':
                raw = f'{name}__fp16_out'
                node.output[i] = raw
                for other in new_nodes:
                    for j, used in enumerate(other.input):
                        if used == name:
                            other.input[j] = raw
                new_nodes.append(
                    helper.make_node('Cast', [raw], [name], name=f'{name}_to_fp32', to=_FLOAT)
                )
                home[name] = 'fp32'
    del graph.node[:]
    graph.node.extend(new_nodes)
    # FP32 weights that only FP16 nodes read are now dead: drop them (half the file).
    used = {name for node in graph.node for name in node.input} | {v.name for v in graph.input}
    live = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    del graph.value_info[:]  # stale types; TensorRT infers its own
    _sort_topologically(graph)
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as e:  # checker and inference raise several types
        raise EngineError(f'the FP16 graph is not valid ONNX: {e}') from e
    return out, kept_fp32


def _sort_topologically(graph: Any) -> None:
    """Order nodes so each comes after its inputs' producers (casts were appended late)."""
    available = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {''}
    pending = list(graph.node)
    ordered = []
    while pending:
        progress = False
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
                progress = True
            else:
                rest.append(node)
        if not progress:
            names = [n.name for n in rest[:3]]
            raise EngineError(f'the FP16 graph has unresolved inputs at nodes {names}')
        pending = rest
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
