"""``moa-depth bag IN OUT --model-path M``: the node's depth pipeline over a recorded rosbag2.

Reads a rosbag2 (MCAP or sqlite3, with ``rosbags``), runs the same ``DepthPipeline`` as
``depth_node`` on every image of one camera, and writes a new rosbag2 holding every input
topic unchanged plus the node's outputs next to the image::

    /camera/image_raw  ->  /camera/depth/image_rect, /camera/depth/camera_info,
                           /camera/depth/confidence, /camera/points,
                           /camera/depth/colored (with --publish-colored)

all on the rectified camera of the image (``frame.rectify``; ``--input-rectified`` for
recordings of image_proc's image_rect), with REP 117 depth values, as the node has them.

Output messages carry the image's header stamp and frame_id and are logged at the image's
bag time, as a node recording would have them (without the inference delay). Each image
uses the newest CameraInfo logged before it (the node prefers the one stamped like the image,
else the newest: the same one for a camera whose driver publishes CameraInfo first).

The output is written to ``OUT.partial/`` and moved to ``OUT`` only when complete, so an
interrupted or crashed run never leaves a bag at ``OUT`` that looks finished. A frame that
cannot be processed (bad encoding, size mismatch) is skipped and counted, never fatal.

An input whose recorder died (MCAP without footer, no metadata.yaml, a ``.db3`` cut short) is
read as far as it goes (``bag.recovery``); the summary says so and how much was read. One with
nothing readable raises ``BagError``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import shutil
import sys
import time
from typing import Any

from moa_depth_ros.errors import ConfigError, InvalidImageError, MoaDepthError
from moa_depth_ros.frame import cdr, outputs
from moa_depth_ros.runtime import params

DISTROS = ('humble', 'iron', 'jazzy', 'kilted')
STORAGES = ('mcap', 'sqlite3')
IMAGE = outputs.IMAGE
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = outputs.CAMERA_INFO


class UndecodableMessageError(InvalidImageError):
    """A message in the bag whose CDR payload cannot be deserialized."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``bag`` arguments."""
    parser.add_argument('input', type=Path, help='input rosbag2 (directory, .mcap or .db3)')
    parser.add_argument('output', type=Path, help='output rosbag2 directory (must not exist)')
    parser.add_argument('--image-topic', help='image topic (default: the only image topic)')
    parser.add_argument(
        '--info-topic', help='CameraInfo topic (default: camera_info beside the image topic)'
    )
    parser.add_argument(
        '--output-namespace',
        help='namespace of the output topics (default: the image topic namespace)',
    )
    # The node's parameters that apply offline, under their own names (params.SPECS).
    params.add_offline_arguments(parser)
    parser.add_argument(
        '--storage', choices=STORAGES, help='output storage (default: same as the input)'
    )
    parser.add_argument(
        '--distro', choices=DISTROS, help='message definitions (default: input bag, or humble)'
    )
    parser.add_argument('--overwrite', action='store_true', help='replace an existing OUTPUT')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def run(args: argparse.Namespace) -> int:
    """Entry point of ``moa-depth bag``."""
    from moa_depth_ros.runtime.memory import retain_freed_memory

    retain_freed_memory()  # the node's allocator setting: no page faults on reused buffers
    summary = process_bag(
        args.input,
        args.output,
        settings=params.settings_from_args(args),
        image_topic=args.image_topic,
        info_topic=args.info_topic,
        output_namespace=args.output_namespace,
        storage=args.storage,
        distro=args.distro,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(format_summary(summary))
    return 0


# ------------------------------------------------------------------------------------ topics


def _parent(topic: str) -> str:
    return topic.rstrip('/').rsplit('/', 1)[0]


def output_topics(image_topic: str, msgtype: str, namespace: str | None = None) -> dict[str, str]:
    """Output topic names for an image topic: its namespace + the node's relative names.

    ``/camera/image_raw`` (or ``/camera/image_raw/compressed``) gives
    ``/camera/depth/image_rect``,
    ``/camera/points``, ...; ``namespace`` overrides the ``/camera`` part.
    """
    if namespace is None:
        base = _parent(image_topic) if msgtype == COMPRESSED else image_topic
        namespace = _parent(base)
    namespace = '/' + namespace.strip('/') if namespace.strip('/') else ''
    return {output.key: f'{namespace}/{output.topic}' for output in outputs.OUTPUTS}


def _choose_image_topic(topics: dict[str, str], requested: str | None) -> str:
    if requested is not None:
        if topics.get(requested) not in (IMAGE, COMPRESSED):
            found = ', '.join(sorted(t for t, ty in topics.items() if ty in (IMAGE, COMPRESSED)))
            raise ConfigError(
                f'--image-topic {requested!r} is not an Image or CompressedImage topic of the '
                f'bag; image topics: {found or "none"}'
            )
        return requested
    for msgtype in (IMAGE, COMPRESSED):
        candidates = sorted(t for t, ty in topics.items() if ty == msgtype)
        # RGB-D and simulated bags also hold depth images; those are not camera input.
        cameras = [t for t in candidates if 'depth' not in t.lower()]
        if len(cameras) == 1:
            return cameras[0]
        if candidates:
            raise ConfigError(
                f'the bag has several {msgtype} topics ({", ".join(candidates)}); choose one '
                f'with --image-topic'
            )
    raise ConfigError('the bag has no sensor_msgs/msg/Image or CompressedImage topic')


def _choose_info_topic(
    topics: dict[str, str], image_topic: str, requested: str | None
) -> str | None:
    if requested is not None:
        if topics.get(requested) != CAMERA_INFO:
            raise ConfigError(f'--info-topic {requested!r} is not a CameraInfo topic of the bag')
        return requested
    base = _parent(image_topic) if topics[image_topic] == COMPRESSED else image_topic
    sibling = f'{_parent(base)}/camera_info'
    if topics.get(sibling) == CAMERA_INFO:
        return sibling
    infos = sorted(t for t, ty in topics.items() if ty == CAMERA_INFO)
    return infos[0] if len(infos) == 1 else None


# ------------------------------------------------------------------------------------ running


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional on a robot; the summary still prints
        return _NoProgress()
    return tqdm(total=total, unit='msg', disable=not enabled, file=sys.stderr, leave=False)


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _copy_connection(writer: Any, conn: Any, typestore: Any) -> Any:
    msgdef = getattr(conn.msgdef, 'data', '') or None
    digest = conn.digest or None
    if msgdef is None or digest is None:
        # Older bags lack the definition or hash; the typestore supplies both.
        msgdef = digest = None
    return writer.add_connection(
        conn.topic,
        conn.msgtype,
        typestore=typestore,
        msgdef=msgdef,
        rihs01=digest,
        serialization_format=conn.ext.serialization_format,
        offered_qos_profiles=conn.ext.offered_qos_profiles,
    )


def process_bag(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    settings: params.NodeSettings,
    image_topic: str | None = None,
    info_topic: str | None = None,
    output_namespace: str | None = None,
    storage: str | None = None,
    distro: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Process one camera of a rosbag2 into a new rosbag2; return the summary (see module doc).

    ``settings`` are the node's parameters (model_path, backend, device, encodings, cloud
    options). Raises ConfigError for unusable arguments before anything is written, BagError
    for an input with nothing readable.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from moa_depth_ros.bag.recovery import open_input
    from moa_depth_ros.engine import load_engine
    from moa_depth_ros.frame.geometry import CameraModelCache
    from moa_depth_ros.frame.pipeline import DepthPipeline, PipelineConfig

    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise ConfigError(f'input bag {str(input_path)!r} does not exist')
    if output_path.exists() and not overwrite:
        raise ConfigError(f'output {str(output_path)!r} exists; pass --overwrite to replace it')
    if output_path.resolve() == input_path.resolve():
        raise ConfigError('output must differ from the input bag')
    staging = output_path.with_name(output_path.name + '.partial')
    if storage is not None and storage not in STORAGES:
        raise ConfigError(f'storage must be one of {", ".join(STORAGES)}, got {storage!r}')

    started = time.perf_counter()
    with open_input(input_path) as reader:
        storage = storage or reader.storage
        if distro is None:
            distro = reader.ros_distro if reader.ros_distro in DISTROS else 'humble'
        if distro not in DISTROS:
            raise ConfigError(f'distro must be one of {", ".join(DISTROS)}, got {distro!r}')
        typestore = get_typestore(getattr(Stores, f'ROS2_{distro.upper()}'))
        topics = {conn.topic: conn.msgtype for conn in reader.connections}
        image_topic = _choose_image_topic(topics, image_topic)
        info_topic = _choose_info_topic(topics, image_topic, info_topic)
        topics_out = output_topics(image_topic, topics[image_topic], output_namespace)
        clashes = sorted(set(topics_out.values()) & set(topics))
        if clashes:
            raise ConfigError(
                f'the bag already has {", ".join(clashes)}; write the outputs elsewhere with '
                f'--output-namespace'
            )

        model_file = params.resolve_model_path(
            str(Path(settings.model_path).expanduser().absolute()), None
        )
        engine = load_engine(model_file, **settings.engine_kwargs())
        model_description = engine.describe()
        try:
            # min/max against the model range: ConfigError before anything is written
            pipeline = DepthPipeline(engine, PipelineConfig(**settings.pipeline_kwargs()))
            if staging.exists():
                shutil.rmtree(staging)  # the leftover of an interrupted run
            staging.mkdir(parents=True)
            bag_dir = staging / output_path.name
            writer = Writer(
                bag_dir,
                version=9 if distro in ('jazzy', 'kilted') else 8,
                storage_plugin=StoragePlugin[storage.upper()],
            )
            with writer:
                counts = _run_frames(
                    reader,
                    writer,
                    typestore,
                    pipeline,
                    settings,
                    image_topic=image_topic,
                    info_topic=info_topic,
                    topics_out=topics_out,
                    cameras=CameraModelCache(),
                    progress=progress,
                )
        finally:
            engine.close()
        recovered = reader.recovery_note(counts['messages_read'])

    if output_path.exists():  # --overwrite: swap in the new bag, then drop the old one
        previous = staging / (output_path.name + '.previous')
        os.replace(output_path, previous)
    os.replace(bag_dir, output_path)
    shutil.rmtree(staging)
    counts.update(
        {
            'input': str(input_path),
            'output': str(output_path),
            'storage': storage,
            'distro': distro,
            'image_topic': image_topic,
            'info_topic': info_topic,
            'model': model_description,
            'recovered': recovered,  # None, or what was read of an unfinished recording
            'wall_s': time.perf_counter() - started,
        }
    )
    return counts


def _run_frames(
    reader: Any,
    writer: Any,
    typestore: Any,
    pipeline: Any,
    settings: params.NodeSettings,
    *,
    image_topic: str,
    info_topic: str | None,
    topics_out: dict[str, str],
    cameras: Any,
    progress: bool,
) -> dict[str, Any]:
    """Copy every message, process every image; return the counters of the summary."""
    copied = {conn.id: _copy_connection(writer, conn, typestore) for conn in reader.connections}
    out_conns = {
        output.key: writer.add_connection(
            topics_out[output.key], output.msgtype, typestore=typestore
        )
        for output in outputs.OUTPUTS
    }
    written = {conn.topic: 0 for conn in copied.values()}
    written.update(dict.fromkeys(topics_out.values(), 0))
    frames = processed = without_cloud = read = 0
    scales: dict[str, list[float]] = {}  # scale source -> depth scale of each frame
    skipped: dict[str, int] = {}
    stage_ms: dict[str, float] = {}
    camera_info = None
    camera_problems: list[str] = []
    bar = _progress(reader.message_count, progress)
    try:
        for conn, timestamp, raw in reader.messages():
            bar.update(1)
            read += 1
            writer.write(copied[conn.id], timestamp, raw)
            written[conn.topic] += 1
            if conn.topic == info_topic:
                try:
                    camera_info = _deserialize(typestore, raw, conn.msgtype)
                except UndecodableMessageError as e:
                    camera_problems.append(str(e))  # keep using the previous one
                continue
            if conn.topic != image_topic:
                continue
            frames += 1
            camera, camera_error = cameras.update(camera_info)
            if camera_error:
                camera_problems.append(camera_error)
            try:
                msg = _deserialize(typestore, raw, conn.msgtype)
                result = pipeline.process_msg(msg, camera)  # Image or CompressedImage
                start = time.perf_counter()
                # The node's outputs, serialized as the node publishes them.
                serialized = outputs.frame_outputs(result, cdr.Header.of(msg.header), settings)
                for output in serialized:
                    writer.write(out_conns[output.key], timestamp, output.data)
                    written[topics_out[output.key]] += 1
            except MoaDepthError as e:
                reason = f'{type(e).__name__}: {e}'
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            processed += 1
            without_cloud += int(result.cloud is None)
            scales.setdefault(result.scale_source, []).append(result.depth_scale)
            if result.camera_error:
                camera_problems.append(result.camera_error)
            timings = dict(result.timings_ms, encode=(time.perf_counter() - start) * 1e3)
            for stage, ms in timings.items():
                stage_ms[stage] = stage_ms.get(stage, 0.0) + ms
            bar.set_postfix_str(f'{processed} frames')
    finally:
        bar.close()
    ms_per_frame = (
        {stage: total / processed for stage, total in stage_ms.items()} if processed else {}
    )
    if ms_per_frame:
        ms_per_frame['total'] = sum(ms_per_frame.values())
    return {
        'messages_read': read,
        'frames': frames,
        'processed': processed,
        'skipped': sum(skipped.values()),
        'skipped_reasons': skipped,
        'dropped': 0,  # offline, every frame is processed: nothing is dropped
        'frames_without_cloud': without_cloud,
        # How each frame's depth got its metric scale (pipeline.FrameResult.scale_source):
        # source -> (frames, mean factor).
        'depth_scale': {
            source: (len(values), sum(values) / len(values)) for source, values in scales.items()
        },
        'camera_info_problems': sorted(set(camera_problems)),
        'ms_per_frame': ms_per_frame,
        'topics_written': {topic: n for topic, n in written.items() if n},
    }


def _deserialize(typestore: Any, raw: bytes, msgtype: str) -> Any:
    try:
        return typestore.deserialize_cdr(raw, msgtype)
    except Exception as e:  # rosbags raises several types for a truncated or foreign payload
        raise UndecodableMessageError(
            f'cannot deserialize a {msgtype} ({len(raw)} bytes): {type(e).__name__}: {e}'
        ) from e


_SCALE_WORDS = {
    'camera': "the camera's focal length over the model's canonical one",
    'assumed canonical': "assumed the model's canonical camera (no usable camera_info)",
    'off': 'not converted (--no-focal-length-correction): depth for the canonical camera',
    'not recorded': 'as predicted (the model records no canonical camera)',
}


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable summary printed at the end of ``moa-depth bag``."""
    lines = [
        f'wrote {summary["output"]} ({summary["storage"]}, {summary["distro"]}) from '
        f'{summary["input"]} with {summary["model"]}',
    ]
    if summary.get('recovered'):
        lines.append(summary['recovered'])
    lines += [
        f'frames: {summary["frames"]} on {summary["image_topic"]}, processed '
        f'{summary["processed"]}, skipped {summary["skipped"]}, dropped {summary["dropped"]}, '
        f'without cloud {summary["frames_without_cloud"]} '
        f'(camera_info: {summary["info_topic"] or "none"})',
    ]
    for reason, count in sorted(summary['skipped_reasons'].items()):
        lines.append(f'  skipped {count}x: {reason}')
    for problem in summary['camera_info_problems']:
        lines.append(f'  unusable camera_info: {problem}')
    for source, (count, mean) in sorted(summary.get('depth_scale', {}).items()):
        lines.append(
            f'  metric scale: {_SCALE_WORDS.get(source, source)} on {count} frames'
            + (f' (x{mean:.3f} on average)' if source == 'camera' else '')
        )
    if summary['ms_per_frame']:
        stages = ', '.join(f'{k} {v:.1f}' for k, v in summary['ms_per_frame'].items())
        lines.append(f'ms per frame: {stages}')
    lines.append(f'time: {summary["wall_s"]:.1f} s')
    lines.append('topics written:')
    lines.extend(f'  {topic}: {n}' for topic, n in sorted(summary['topics_written'].items()))
    return '\n'.join(lines)
