"""``depth_node``: the ROS 2 node, and the only module of the package that imports rclpy.

Wiring only. Parameters are specified and validated in ``params``, the newest-frame worker
lives in ``worker``, the frame pipeline (decode, network, back-projection) in ``pipeline``,
message encoding in ``msgs``, /diagnostics statistics in ``diagnostics``.

Topics (relative, so a namespace and remappings place them; REP 118 / 117 / 103):

- in  ``image`` (sensor_msgs/Image), ``image/compressed`` (CompressedImage, optional),
  ``camera_info`` (CameraInfo, cached; images never wait for it). Reliability follows the
  publishers (``input_reliability: auto``): reliable when every publisher offers it, as
  rosbag2 records, because a best-effort reader silently loses large frames from a reliable
  camera under Fast DDS defaults; checked again every second as publishers come and go.
- out ``depth`` (32FC1 m or 16UC1 mm), ``depth/camera_info``, ``depth/confidence`` (32FC1),
  ``points`` (PointCloud2 x,y,z[,rgb]), ``depth/colored`` (bgr8, optional), all stamped with
  the image's stamp and optical frame_id; ``/diagnostics``.

Written against rclpy's API as Humble, Jazzy and Kilted share it (no post-set parameter
callbacks, no ``rclpy.init`` context manager) and tested on real rclpy (Jazzy, Kilted) over
Fast DDS. SIGINT and SIGTERM end ``spin`` with KeyboardInterrupt or
ExternalShutdownException, after which the worker is joined and the context shut down.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from moa_depth_ros.engine import load_engine
from moa_depth_ros.errors import CameraInfoError, ConfigError, MoaDepthError
from moa_depth_ros.frame import cdr, outputs
from moa_depth_ros.frame.geometry import CameraModel, CameraModelCache
from moa_depth_ros.frame.pipeline import DepthPipeline, FrameResult, PipelineConfig
from moa_depth_ros.runtime import diagnostics, params
from moa_depth_ros.runtime.memory import retain_freed_memory
from moa_depth_ros.runtime.worker import LatestFrameWorker

NODE_NAME = 'moa_depth_node'
IMAGE_TOPIC = 'image'
COMPRESSED_TOPIC = 'image/compressed'
CAMERA_INFO_TOPIC = 'camera_info'
# The rclpy class of each output type (the topics themselves: outputs.OUTPUTS).
_MESSAGE_CLASSES = {
    outputs.IMAGE: Image,
    outputs.CAMERA_INFO: CameraInfo,
    outputs.POINT_CLOUD: PointCloud2,
}
DIAGNOSTICS_TOPIC = '/diagnostics'

_RELIABILITY = {
    'reliable': ReliabilityPolicy.RELIABLE,
    'best_effort': ReliabilityPolicy.BEST_EFFORT,
}
_LEVELS = {
    diagnostics.OK: DiagnosticStatus.OK,
    diagnostics.WARN: DiagnosticStatus.WARN,
    diagnostics.ERROR: DiagnosticStatus.ERROR,
    diagnostics.STALE: DiagnosticStatus.STALE,
}
_NO_CAMERA_INFO_LOG_PERIOD_S = 30.0
# CameraInfo messages kept by stamp, so a frame gets the one stamped like itself even when
# the executor hands over the image before the CameraInfo that came with it.
_CAMERA_INFOS_KEPT = 8
# A camera that stamps CameraInfo like its images has its frame wait this long for the one
# stamped like it (a small network can finish before the executor takes the CameraInfo);
# one that does not arrive in time is taken as lost, and the newest serves.
_CAMERA_INFO_WAIT_S = 0.1
_CAMERA_MISFIT_LOG_PERIOD_S = 30.0
# How often input_reliability 'auto' looks at the publishers again (a graph query, cheap).
_GRAPH_POLL_S = 1.0
# Shutdown waits this long for the frame in the network; SIGINT/SIGTERM must end the
# process promptly, and the worker thread is a daemon.
_STOP_TIMEOUT_S = 1.5


def input_qos(reliability: str) -> QoSProfile:
    """QoS of an input subscription.

    Only the newest frame is used, but the history holds a few: a reliable reader whose
    history is full replaces samples silently, so a burst (the executor held up for a moment)
    would lose frames uncounted; delivered, they count as dropped (busy) on /diagnostics.
    """
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=5,
        reliability=_RELIABILITY[reliability],
        durability=DurabilityPolicy.VOLATILE,
    )


def follow_publishers(offered: list[Any], current: str | None) -> str:
    """Pick the input reliability of ``auto`` from the publishers' offered reliabilities.

    Reliable when every publisher offers it (a reliable reader matches only reliable
    writers); best effort as soon as one publisher is best effort. With no publisher the
    current choice stays (best effort at first, which matches any publisher that comes).
    """
    if not offered:
        return current or 'best_effort'
    if all(r == ReliabilityPolicy.RELIABLE for r in offered):
        return 'reliable'
    return 'best_effort'


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    """Settings and the pipeline config they imply, swapped together in one assignment."""

    settings: params.NodeSettings
    config: PipelineConfig


@dataclasses.dataclass(frozen=True)
class _Input:
    """One input subscription, the reliability it was created with, and the one it replaces.

    A subscription that changes reliability is replaced make-before-break: the old one keeps
    receiving until the next graph poll, so the switch loses no frame while the publishers
    discover the new reader. A frame both deliver is taken once (same stamp and frame).
    """

    subscription: Any
    reliability: str
    retiring: Any = None


def _descriptor(spec: params.ParamSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(
        description=spec.description,
        additional_constraints=spec.constraints,
        read_only=spec.read_only,
    )
    if spec.min_value is not None and spec.max_value is not None:
        if spec.type_name == 'int':
            descriptor.integer_range = [
                IntegerRange(from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)
            ]
        else:
            descriptor.floating_point_range = [
                FloatingPointRange(
                    from_value=float(spec.min_value), to_value=float(spec.max_value), step=0.0
                )
            ]
    return descriptor


class DepthNode(Node):
    """Monocular metric depth: image (+ camera_info) in; depth, confidence, points out."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._worker: LatestFrameWorker[Any] | None = None  # Image or CompressedImage
        self._engine = None
        try:
            self._start()
        except BaseException:
            self.destroy_node()
            raise

    # -- start-up -----------------------------------------------------------------------

    def _start(self) -> None:
        for spec in params.SPECS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        values = {spec.name: self.get_parameter(spec.name).value for spec in params.SPECS}
        settings = params.NodeSettings.from_values(values)

        model_file = params.resolve_model_path(settings.model_path, params.find_package_share())
        self._engine = load_engine(model_file, **settings.engine_kwargs())
        # min/max against the model range: ConfigError
        self._pipeline = DepthPipeline(self._engine, PipelineConfig(**settings.pipeline_kwargs()))
        # A frame reads this once; a parameter change replaces it in one assignment, so a
        # frame sees the old or the new settings whole and nothing waits for inference.
        self._snapshot = _Snapshot(settings, self._pipeline.config)
        # Held while publishing and while publishers are re-created (output QoS change).
        self._publish_lock = threading.Lock()
        self._camera_info_msg = None  # the newest
        self._camera_infos: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
        self._camera_infos_lock = threading.Lock()
        # Notified when a CameraInfo arrives; a frame may be waiting for its own.
        self._camera_info_arrived = threading.Condition(self._camera_infos_lock)
        # Whether the last frame found a CameraInfo stamped like itself (worker thread only).
        self._camera_info_paired = False
        self._cameras = CameraModelCache()  # used on the worker thread only
        self._stats = diagnostics.NodeStatistics(
            backend=self._engine.backend, model=self._engine.describe()
        )
        self._worker = LatestFrameWorker(
            self._process_frame,
            log=self.get_logger(),
            max_rate_hz=settings.max_rate_hz,
            name='moa_depth_inference',
        )

        self._publishers_by_topic: dict[str, Any] = {}
        self._create_output_publishers(settings.output_reliability, settings.output_history_depth)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._diagnostics_timer = self.create_timer(
            settings.diagnostics_period_s, self._publish_diagnostics
        )
        # Images the middleware reports lost on their way in (None: it cannot tell).
        self._lost_in_transport: int | None = 0
        self._last_frame_key: tuple | None = None
        self._replacing = False
        self._inputs: dict[str, _Input] = {}
        self._refresh_inputs()
        self._graph_timer = self.create_timer(_GRAPH_POLL_S, self._refresh_inputs)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker.start()
        self.get_logger().info(
            f'depth from {self.resolve_topic_name(IMAGE_TOPIC)} with '
            f'{self._engine.describe()}; model file {model_file}'
        )

    @property
    def _settings(self) -> params.NodeSettings:
        return self._snapshot.settings

    def _create_output_publishers(self, reliability: str, history_depth: int) -> None:
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=history_depth,
            reliability=_RELIABILITY[reliability],
            durability=DurabilityPolicy.VOLATILE,
        )
        with self._publish_lock:
            for publisher in self._publishers_by_topic.values():
                self.destroy_publisher(publisher)
            self._publishers_by_topic = {
                output.key: self.create_publisher(
                    _MESSAGE_CLASSES[output.msgtype], output.topic, qos
                )
                for output in outputs.OUTPUTS
            }

    # -- inputs ---------------------------------------------------------------------------

    def _input_topics(self) -> dict[str, tuple[Any, Any]]:
        """Map each input topic the settings ask for to (message type, callback)."""
        topics = {
            IMAGE_TOPIC: (Image, self._on_image),
            CAMERA_INFO_TOPIC: (CameraInfo, self._on_camera_info),
        }
        if self._settings.subscribe_compressed:
            topics[COMPRESSED_TOPIC] = (CompressedImage, self._on_compressed_image)
        return topics

    def _refresh_inputs(self) -> None:
        """Create, re-create or drop input subscriptions to match settings and publishers."""
        mode = self._settings.input_reliability
        wanted = self._input_topics()
        for topic in [t for t in self._inputs if t not in wanted]:
            gone = self._inputs.pop(topic)
            for subscription in (gone.subscription, gone.retiring):
                if subscription is not None:
                    self.destroy_subscription(subscription)
        for topic, (msg_type, callback) in wanted.items():
            current = self._inputs.get(topic)
            if current is not None and current.retiring is not None:
                # Replaced a poll ago: the publishers have found the new reader by now.
                self.destroy_subscription(current.retiring)
                current = self._inputs[topic] = dataclasses.replace(current, retiring=None)
            if mode == 'auto':
                offered = [
                    info.qos_profile.reliability
                    for info in self.get_publishers_info_by_topic(self.resolve_topic_name(topic))
                ]
                reliability = follow_publishers(offered, current and current.reliability)
            else:
                reliability = mode
            if current is not None and current.reliability == reliability:
                continue
            subscription = self._subscribe(msg_type, topic, callback, reliability)
            if current is not None:
                self._replacing = True
            self._inputs[topic] = _Input(
                subscription, reliability, None if current is None else current.subscription
            )
            if current is not None:
                self.get_logger().info(
                    f'{self.resolve_topic_name(topic)}: now subscribed {reliability} '
                    f'(input_reliability {mode})'
                )
        self._replacing = any(i.retiring is not None for i in self._inputs.values())

    def _subscribe(self, msg_type: Any, topic: str, callback: Any, reliability: str) -> Any:
        qos = input_qos(reliability)
        if topic == CAMERA_INFO_TOPIC or self._lost_in_transport is None:
            return self.create_subscription(msg_type, topic, callback, qos)
        try:
            return self.create_subscription(
                msg_type,
                topic,
                callback,
                qos,
                event_callbacks=SubscriptionEventCallbacks(message_lost=self._on_message_lost),
            )
        except UnsupportedEventTypeError:  # an RMW without the message-lost event
            self._lost_in_transport = None
            return self.create_subscription(msg_type, topic, callback, qos)

    def input_reliability(self, topic: str = IMAGE_TOPIC) -> str | None:
        """Return the reliability an input subscription has now (None: not subscribed)."""
        current = self._inputs.get(topic)
        return None if current is None else current.reliability

    # -- callbacks (executor thread) ----------------------------------------------------

    def _on_image(self, msg: Image) -> None:
        self._take(msg, compressed=False)

    def _on_compressed_image(self, msg: CompressedImage) -> None:
        self._take(msg, compressed=True)

    def _take(self, msg: Any, compressed: bool) -> None:
        stamp = msg.header.stamp
        key = (compressed, stamp.sec, stamp.nanosec, msg.header.frame_id)
        # While a subscription is being replaced, both deliver each frame: take it once. (Only
        # then: a camera that stamps every frame alike must not lose all but the first.)
        if self._replacing and key == self._last_frame_key:
            return
        self._last_frame_key = key
        self._stats.input_frame()
        self._worker.submit(msg)

    def _on_message_lost(self, info: Any) -> None:
        if self._lost_in_transport is not None:
            self._lost_in_transport += int(info.total_count_change)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        with self._camera_infos_lock:  # before anything slow: a frame may be waiting for it
            first = self._camera_info_msg is None
            self._camera_infos[key] = msg
            self._camera_infos.move_to_end(key)
            while len(self._camera_infos) > _CAMERA_INFOS_KEPT:
                self._camera_infos.popitem(last=False)
            self._camera_info_msg = msg
            self._camera_info_arrived.notify_all()
        if first:
            self._stats.camera_info_received()
            self.get_logger().info(
                f'camera_info received ({msg.width}x{msg.height}, '
                f'{msg.distortion_model or "no distortion model"})'
            )

    def _current_camera(self) -> CameraModel | None:
        """Return the newest CameraInfo as a camera model (None: none yet, or not usable)."""
        with self._camera_infos_lock:
            info = self._camera_info_msg
        try:
            return None if info is None else CameraModel.from_camera_info(info)
        except CameraInfoError:
            return None

    def _camera_info_for(self, image_header: Any) -> Any:
        """Return the CameraInfo stamped like the image, else the newest (None: none yet).

        Where the previous frame found its own, this one waits up to _CAMERA_INFO_WAIT_S
        for its own: an image can reach the node before the CameraInfo sent with it.
        """
        key = (image_header.stamp.sec, image_header.stamp.nanosec)
        with self._camera_info_arrived:
            if self._camera_info_paired:
                self._camera_info_arrived.wait_for(
                    lambda: key in self._camera_infos, timeout=_CAMERA_INFO_WAIT_S
                )
            info = self._camera_infos.get(key)
            self._camera_info_paired = info is not None
            return self._camera_info_msg if info is None else info

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        # Parameters this node does not own (use_sim_time, ...) are not ours to reject.
        changes = {p.name: p.value for p in parameters if p.name in params.SPEC_BY_NAME}
        old = self._snapshot
        try:
            new = old.settings.updated(changes)
            config = dataclasses.replace(old.config, **new.pipeline_kwargs())
            # Checked with the camera streaming now: a limit beyond what the model predicts
            # on it would empty every frame's range.
            self._pipeline.camera_depth_range_m(config, self._current_camera())
        except ConfigError as e:
            return SetParametersResult(successful=False, reason=str(e))
        # Humble has no post-set callbacks: apply here, after every check has passed.
        self._snapshot = _Snapshot(new, config)
        if new.max_rate_hz != old.settings.max_rate_hz:
            self._worker.set_max_rate(new.max_rate_hz)
        if (new.output_reliability, new.output_history_depth) != (
            old.settings.output_reliability,
            old.settings.output_history_depth,
        ):
            self._create_output_publishers(new.output_reliability, new.output_history_depth)
        if (new.subscribe_compressed, new.input_reliability) != (
            old.settings.subscribe_compressed,
            old.settings.input_reliability,
        ):
            self._refresh_inputs()
        if new.diagnostics_period_s != old.settings.diagnostics_period_s:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = self.create_timer(
                new.diagnostics_period_s, self._publish_diagnostics
            )
        changed = [
            f'{name}={value!r}'
            for name, value in changes.items()
            if getattr(old.settings, name) != value
        ]
        if changed:
            self.get_logger().info('parameters changed: ' + ', '.join(changed))
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        worker = self._worker.stats
        snapshot = self._stats.snapshot(
            dropped=worker.dropped,
            failed=worker.failed,
            last_error=worker.last_error,
            cloud_enabled=self._settings.publish_cloud,
            worker_stopped=worker.stopped,
            lost_in_transport=self._lost_in_transport,
        )
        status = DiagnosticStatus(
            level=_LEVELS[snapshot.level],
            name=f'{self.get_name()}: depth estimation',
            message=snapshot.message,
            hardware_id=self._engine.backend,
            values=[KeyValue(key=key, value=value) for key, value in snapshot.values],
        )
        array = DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]
        )
        self._diagnostics_pub.publish(array)

    # -- worker thread ------------------------------------------------------------------

    def _process_frame(self, msg: Any) -> None:
        snapshot = self._snapshot  # one consistent view of the settings for this frame
        settings = snapshot.settings
        used: list[Any] = [None]

        def camera() -> Any:
            # Looked up once the network has run: the CameraInfo sent with this image has
            # arrived by then even when the executor handed over the image first.
            used[0] = camera_info = self._camera_info_for(msg.header)
            model, error = self._cameras.update(camera_info)
            if error:
                self.get_logger().warning(
                    f'unusable camera_info, publishing depth without a point cloud (calibrate '
                    f'the camera, e.g. with camera_calibration): {error}'
                )
            return model

        result = self._pipeline.process_msg(msg, camera, snapshot.config)
        camera_info = used[0]
        if result.camera_error:
            self.get_logger().warning(
                f'camera_info does not fit the image, publishing depth without a point cloud: '
                f'{result.camera_error}',
                throttle_duration_sec=_CAMERA_MISFIT_LOG_PERIOD_S,
            )
        self._report_scale(result)
        if camera_info is not None:
            self._stats.set_note('camera_info problem', self._cameras.error or result.camera_error)
        if settings.publish_cloud and camera_info is None:
            self._stats.set_note('point cloud', 'waiting for camera_info')
            self.get_logger().warning(
                f'no CameraInfo received on {self.resolve_topic_name(CAMERA_INFO_TOPIC)} yet: '
                f'publishing depth without a point cloud (does the camera driver publish '
                f'camera_info, and is it remapped?)',
                throttle_duration_sec=_NO_CAMERA_INFO_LOG_PERIOD_S,
            )
        elif camera_info is not None:
            self._stats.set_note('point cloud', '')
        start = time.perf_counter()
        try:
            self._publish(result, msg.header, settings)
        except Exception:
            # Ctrl-C shuts the context down from rclpy's signal thread while this frame may
            # still be in the network; its publishers then refuse it. That is shutdown, not a
            # failure worth a traceback.
            if not self.context.ok():
                return
            raise
        publish_ms = (time.perf_counter() - start) * 1e3
        self._stats.output_frame({**result.timings_ms, 'publish': publish_ms})

    def _report_scale(self, result: FrameResult) -> None:
        """Say on /diagnostics (and once on the log) how depth got its metric scale."""
        source = result.scale_source
        if source == 'camera':
            note = (
                f"x{result.depth_scale:.3f}: this camera's focal length over the model's "
                f'canonical one'
            )
        elif source == 'assumed canonical':
            note = (
                "no usable camera_info: assumes the model's canonical camera, so metric "
                'scale holds only for a camera like the training camera'
            )
            self.get_logger().warning(
                f'{note} ({self._engine.metadata.canonical_camera}); publish a calibrated '
                f'camera_info for metric depth on this camera',
                once=True,
            )
        elif source == 'off':
            note = "off (focal_length_correction false): depth for the model's canonical camera"
        else:
            note = 'the model records no canonical camera: depth as it predicts it'
        self._stats.set_note('metric scale', note)

    def _publish(
        self, result: FrameResult, image_header: Any, settings: params.NodeSettings
    ) -> None:
        if not image_header.frame_id:
            self.get_logger().warning(
                'images have an empty header.frame_id: RViz and TF cannot place depth and '
                'points (set the camera driver frame id to the optical frame)',
                once=True,
            )
        # Serialized once (outputs.frame_outputs), published as bytes: what the bag tool
        # writes, and one copy of each payload instead of three.
        serialized = outputs.frame_outputs(result, cdr.Header.of(image_header), settings)
        with self._publish_lock:
            for output in serialized:
                self._publishers_by_topic[output.key].publish(output.data)

    # -- shutdown -----------------------------------------------------------------------

    def destroy_node(self) -> None:
        """Stop the worker (join), release the engine, then destroy the ROS entities."""
        stopped = True
        if self._worker is not None:
            stopped = self._worker.stop(_STOP_TIMEOUT_S)
            if not stopped:
                self.get_logger().warning(
                    f'the frame in progress did not finish within {_STOP_TIMEOUT_S:g} s; '
                    f'shutting down without it'
                )
            self._worker = None
        if self._engine is not None:
            # An engine still running a frame (GPU buffers in use) is left to process exit.
            if stopped:
                self._engine.close()
            self._engine = None
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Console script ``depth_node`` (``ros2 run moa_depth_ros depth_node``)."""
    rclpy.init(args=args)
    node = None
    try:
        # Before the first frame: every frame allocates and frees ~15 MB of buffers, which
        # glibc would otherwise hand back to the kernel and page-fault in again each frame.
        retained, how = retain_freed_memory()
        if retained:
            get_logger(NODE_NAME).info(how)
        else:
            get_logger(NODE_NAME).debug(how)
        node = DepthNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C: Humble raises KeyboardInterrupt, Jazzy ExternalShutdownException
    except (MoaDepthError, ParameterException) as e:
        # A configuration mistake: one line naming it, not a traceback.
        hint = ''
        if "expecting type 'DOUBLE'" in str(e):
            hint = ' (ROS 2 parameters are typed: write a decimal point, e.g. 10.0, not 10)'
        get_logger(NODE_NAME).fatal(f'cannot start: {e}{hint}')
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
