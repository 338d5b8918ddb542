"""``python -m tools.bench frame-stages``: each per-frame stage, the network excluded.

For a synthetic W x H rgb8 frame and depth map it times decode, resize to the network input,
depth upsampling and range masking, back-projection, cloud packing, depth/confidence encoding
and serializing the outputs (the CDR bytes the node publishes), and compares each with the memory
bandwidth floor measured in the same run: a numpy copy of as many bytes as the stage writes.
The target is the whole frame, network excluded, under 3 ms for VGA on one core, so OpenCV is
pinned to one thread unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import array
import time
from typing import Any, Callable

import numpy as np

from moa_depth_ros.bench import measure
from moa_depth_ros.runtime.memory import retain_freed_memory

TARGET_MS = 3.0


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument('--width', type=int, default=640, help='frame width in pixels')
    parser.add_argument('--height', type=int, default=480, help='frame height in pixels')
    parser.add_argument(
        '--input-size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'),
        help='network input size (height width)',
    )  # fmt: skip
    parser.add_argument('--repeats', type=int, default=200, help='timed runs per stage')
    parser.add_argument(
        '--threads', type=int, default=1, help='OpenCV threads (cv2.setNumThreads); 1 = one core'
    )
    parser.add_argument('--decimation', type=int, default=1, help='cloud decimation')
    parser.add_argument('--no-rgb', action='store_true', help='cloud without the rgb field')
    parser.add_argument(
        '--retain-freed-memory',
        action='store_true',
        help='ask glibc to keep freed memory (mallopt) instead of returning it to the OS; '
        'shows how much of the end-to-end time is page faults on fresh frame buffers',
    )


def _yuyv(rgb: np.ndarray) -> np.ndarray:
    """Pack RGB as YUYV 4:2:2 (BT.601, video range), what most USB cameras send.

    OpenCV 5 converts this itself (COLOR_RGB2YUV_YUY2); OpenCV 4.6, which Jazzy ships, has no
    conversion to the packed formats, so the samples are computed and packed here.
    """
    r, g, b = (rgb[..., c].astype(np.float32) for c in range(3))
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    packed = np.empty(rgb.shape[:2] + (2,), dtype=np.uint8)
    packed[..., 0] = np.rint(y)
    packed[:, 0::2, 1] = np.rint(0.5 * (u[:, 0::2] + u[:, 1::2]))  # each pixel pair's chroma
    packed[:, 1::2, 1] = np.rint(0.5 * (v[:, 0::2] + v[:, 1::2]))
    return packed.reshape(rgb.shape[0], -1)


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, 'data') and isinstance(value.data, np.ndarray):
        return int(value.data.nbytes)
    if hasattr(value, 'xyz'):
        return _nbytes(value.xyz) + (0 if value.rgb is None else _nbytes(value.rgb))
    return 0


def bench_frame_stages(
    width: int = 640,
    height: int = 480,
    input_hw: tuple[int, int] = (224, 224),
    repeats: int = 200,
    threads: int | None = 1,
    decimation: int = 1,
    cloud_rgb: bool = True,
) -> dict[str, Any]:
    """Time every per-frame stage; return {'stages': {name: {...}}, 'total_ms', ...}.

    Each stage entry has median_ms, p90_ms, bytes (what the stage writes), floor_ms (median
    time of a numpy copy of that many bytes) and ratio (median_ms / floor_ms). Stages marked
    ``in_total`` add up to one rgb8 frame through the node, the network excluded.
    """
    import cv2

    from moa_depth_ros.frame import cdr, geometry, msgs, outputs, pipeline
    from moa_depth_ros.runtime import params

    if threads is not None:
        cv2.setNumThreads(int(threads))
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    camera = measure.synthetic_camera(width, height)
    ray_start = time.perf_counter()
    camera.ray_planes(decimation)
    ray_table_ms = (time.perf_counter() - ray_start) * 1e3

    def image_msg(encoding: str, data: np.ndarray, step: int) -> Any:
        msg = measure.RclpyLikeMessage()
        msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step = (
            height,
            width,
            encoding,
            0,
            step,
        )
        msg.data = array.array('B', data.tobytes())
        return msg

    rgb_msg = image_msg('rgb8', rgb, width * 3)
    bgr_msg = image_msg('bgr8', np.ascontiguousarray(rgb[..., ::-1]), width * 3)
    yuyv_msg = image_msg('yuv422_yuy2', _yuyv(rgb), width * 2)

    in_h, in_w = input_hw
    rows = np.linspace(0.8, 6.0, in_h, dtype=np.float32)[:, None]
    depth_small = np.ascontiguousarray(np.broadcast_to(rows, (in_h, in_w)))
    conf_small = np.full((in_h, in_w), 0.7, dtype=np.float32)
    range_m = (0.5, 10.0)
    depth_m, confidence = pipeline.postprocess(depth_small, conf_small, (height, width), range_m)
    cloud = geometry.make_cloud(
        depth_m, camera, rgb=rgb if cloud_rgb else None, decimation=decimation
    )
    cloud_fields = msgs.encode_cloud(cloud)
    depth_fields = msgs.encode_depth(depth_m)
    conf_fields = msgs.encode_confidence(confidence)
    header = cdr.Header(0, 0, 'camera_optical_frame')

    def serialize_all() -> tuple[bytes, ...]:
        return (
            cdr.image(header, depth_fields),
            cdr.image(header, conf_fields),
            cdr.point_cloud(header, cloud_fields),
        )

    stages: list[tuple[str, Callable[[], Any], bool]] = [
        ('decode rgb8', lambda: msgs.decode_image(rgb_msg), True),
        ('decode bgr8', lambda: msgs.decode_image(bgr_msg), False),
        ('decode yuv422_yuy2', lambda: msgs.decode_image(yuyv_msg), False),
        ('resize to input', lambda: pipeline.preprocess(rgb, input_hw), True),
        (
            'upsample + range',
            lambda: pipeline.postprocess(depth_small, conf_small, (height, width), range_m),
            True,
        ),
        (
            'back-project',
            lambda: geometry.make_cloud(
                depth_m, camera, rgb=rgb if cloud_rgb else None, decimation=decimation
            ),
            True,
        ),
        ('pack cloud', lambda: msgs.encode_cloud(cloud), True),
        (
            'encode depth+conf',
            lambda: (msgs.encode_depth(depth_m), msgs.encode_confidence(confidence)),
            True,
        ),
        ('serialize outputs', serialize_all, True),
    ]
    results: dict[str, dict[str, Any]] = {}
    for name, fn, in_total in stages:
        nbytes = _nbytes(fn())  # also the warm-up: caches, allocator, lazy OpenCV set-up
        timing = measure.time_call(fn, warmup=0, iters=repeats)
        floor_ms = measure.copy_ms(max(nbytes, 1), iters=repeats)['median_ms']
        median_ms = timing['median_ms']
        results[name] = {
            'median_ms': median_ms,
            'p90_ms': timing['p90_ms'],
            'bytes': nbytes,
            'floor_ms': floor_ms,
            'ratio': median_ms / floor_ms if floor_ms > 0 else float('inf'),
            'in_total': in_total,
        }

    class _Identity:
        """A zero-cost network, so the end-to-end run measures everything but inference."""

        def __init__(self) -> None:
            self.input_hw = tuple(input_hw)
            self.depth_range_m = range_m

        def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return depth_small[None, None], conf_small[None, None]

    runner = pipeline.DepthPipeline(
        _Identity(),
        pipeline.PipelineConfig(cloud_rgb=cloud_rgb, decimation=decimation),
    )

    settings = params.NodeSettings()

    def end_to_end() -> None:
        result = runner.process_msg(rgb_msg, camera)
        outputs.frame_outputs(result, header, settings)

    e2e = measure.time_call(end_to_end, warmup=1, iters=repeats)
    total = sum(s['median_ms'] for s in results.values() if s['in_total'])
    total_floor = sum(s['floor_ms'] for s in results.values() if s['in_total'])
    return {
        'width': width,
        'height': height,
        'input_hw': tuple(input_hw),
        'threads': cv2.getNumThreads(),
        'repeats': repeats,
        'ray_table_ms': ray_table_ms,
        'stages': results,
        'total_ms': total,
        'total_floor_ms': total_floor,
        'end_to_end_median_ms': e2e['median_ms'],
        'end_to_end_p90_ms': e2e['p90_ms'],
        'target_ms': TARGET_MS,
    }


def format_report(report: dict[str, Any]) -> str:
    """Render ``bench_frame_stages`` output as a plain-text table."""
    lines = [
        f'per-frame stages, {report["width"]}x{report["height"]} rgb8 -> depth + cloud, '
        f'network input {report["input_hw"][0]}x{report["input_hw"][1]}, '
        f'OpenCV threads {report["threads"]}, {report["repeats"]} runs each',
        f'{"stage":<22}{"median ms":>10}{"p90 ms":>9}{"MB out":>9}{"copy ms":>9}{"x floor":>9}',
    ]
    for name, s in report['stages'].items():
        mark = '' if s['in_total'] else '  (not in total)'
        lines.append(
            f'{name:<22}{s["median_ms"]:>10.3f}{s["p90_ms"]:>9.3f}{s["bytes"] / 1e6:>9.2f}'
            f'{s["floor_ms"]:>9.3f}{s["ratio"]:>9.1f}{mark}'
        )
    verdict = 'within' if report['total_ms'] < report['target_ms'] else 'OVER'
    lines += [
        f'{"sum of stages":<22}{report["total_ms"]:>10.3f}{"":>9}{"":>9}'
        f'{report["total_floor_ms"]:>9.3f}'
        f'{report["total_ms"] / max(report["total_floor_ms"], 1e-9):>9.1f}',
        f'{"end to end (no net)":<22}{report["end_to_end_median_ms"]:>10.3f}'
        f'{report["end_to_end_p90_ms"]:>9.3f}',
        f'target {report["target_ms"]:.1f} ms per frame: {verdict}; '
        f'ray table (once per camera): {report["ray_table_ms"]:.1f} ms; '
        f'allocator: {report.get("allocator", "default")}',
    ]
    return '\n'.join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the table."""
    from moa_depth_ros.errors import ConfigError

    if args.width <= 0 or args.height <= 0 or args.repeats <= 0 or args.decimation <= 0:
        raise ConfigError(
            f'width, height, repeats and decimation must be positive, got {args.width}, '
            f'{args.height}, {args.repeats}, {args.decimation}'
        )
    retained = False
    if args.retain_freed_memory:
        retained, how = retain_freed_memory()
        if not retained:
            print(f'note: {how}')
    report = bench_frame_stages(
        width=args.width,
        height=args.height,
        input_hw=tuple(args.input_size),
        repeats=args.repeats,
        threads=args.threads,
        decimation=args.decimation,
        cloud_rgb=not args.no_rgb,
    )
    report['allocator'] = 'glibc, freed memory retained' if retained else 'default'
    print(format_report(report))
    return 0
