"""``depth_node``: the ROS 2 node, and the only module of the package that imports rclpy.

Wiring only. Parameters are specified and validated in ``params``, the newest-frame worker
lives in ``worker``, the frame pipeline (decode, network, back-projection) in ``pipeline``,
message encoding in ``msgs``, /diagnostics statistics in ``diagnostics``.

Topics (relative, so a namespace and remappings place them; REP 118 / 117 / 103):

- in  ``image`` (sensor_msgs/Image), ``image/compressed`` (CompressedImage, optional),
  ``camera_info`` (CameraInfo, cached; images never wait for it). Best-effort QoS, which
  matches both reliable and best-effort publishers.
- out ``depth`` (32FC1 m or 16UC1 mm), ``depth/camera_info``, ``depth/confidence`` (32FC1),
  ``points`` (PointCloud2 x,y,z[,rgb]), ``depth/colored`` (bgr8, optional), all stamped with
  the image's stamp and optical frame_id; ``/diagnostics``.

Written against rclpy's API as Humble and Jazzy share it (no post-set parameter callbacks,
no ``rclpy.init`` context manager): Ctrl-C ends ``spin`` with KeyboardInterrupt or
ExternalShutdownException, after which the worker is joined and the context shut down.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from builtin_interfaces.msg import Time
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
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import (
    CameraInfo,
    CompressedImage,
    Image,
    PointCloud2,
    PointField,
    RegionOfInterest,
)
from std_msgs.msg import Header

from moa_depth_ros import diagnostics, msgs, params
from moa_depth_ros.engine import load_engine
from moa_depth_ros.errors import ConfigError, MoaDepthError
from moa_depth_ros.pipeline import DepthPipeline, PipelineConfig
from moa_depth_ros.runtime import retain_freed_memory
from moa_depth_ros.worker import CameraModelCache, LatestFrameWorker

NODE_NAME = 'moa_depth_node'
IMAGE_TOPIC = 'image'
COMPRESSED_TOPIC = 'image/compressed'
CAMERA_INFO_TOPIC = 'camera_info'
DEPTH_TOPIC = 'depth'
DEPTH_INFO_TOPIC = 'depth/camera_info'
CONFIDENCE_TOPIC = 'depth/confidence'
POINTS_TOPIC = 'points'
COLORED_TOPIC = 'depth/colored'
DIAGNOSTICS_TOPIC = '/diagnostics'

# Inputs: best effort matches every publisher; a short history because only the newest
# frame is ever used.
INPUT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=2,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
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
_STOP_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True)
class _Frame:
    """An image message as it waits for the worker, with the CameraInfo current then."""

    msg: Any
    compressed: bool
    camera_info: Any


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


def _fill_camera_info(msg: Any, fields: dict[str, Any]) -> Any:
    msg.height = int(fields['height'])
    msg.width = int(fields['width'])
    msg.distortion_model = str(fields['distortion_model'])
    msg.d = [float(v) for v in fields['d']]
    msg.k = [float(v) for v in fields['k']]
    msg.r = [float(v) for v in fields['r']]
    msg.p = [float(v) for v in fields['p']]
    msg.binning_x = int(fields['binning_x'])
    msg.binning_y = int(fields['binning_y'])
    roi = fields['roi']
    msg.roi = RegionOfInterest(
        x_offset=int(roi['x_offset']),
        y_offset=int(roi['y_offset']),
        height=int(roi['height']),
        width=int(roi['width']),
        do_rectify=bool(roi['do_rectify']),
    )
    return msg


class DepthNode(Node):
    """Monocular metric depth: image (+ camera_info) in; depth, confidence, points out."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._worker: LatestFrameWorker[_Frame] | None = None
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
        self._settings = params.NodeSettings.from_values(values)

        model_file = params.resolve_model_path(
            self._settings.model_path, params.find_package_share()
        )
        self._engine = load_engine(
            model_file, backend=self._settings.backend, device=self._settings.device
        )
        self._pipeline = DepthPipeline(
            self._engine, PipelineConfig(**self._settings.pipeline_kwargs())
        )
        self._pipeline.depth_range_m()  # min/max against the model range: ConfigError
        # Held while a frame runs through the pipeline and while a parameter change updates
        # it, so a frame never sees half of a change.
        self._pipeline_lock = threading.Lock()
        # Held while publishing and while publishers are re-created (output QoS change).
        self._publish_lock = threading.Lock()
        self._camera_info_msg = None
        self._cameras = CameraModelCache()  # used on the worker thread only
        self._stats = diagnostics.NodeStatistics(
            backend=self._engine.backend, model=self._engine.describe()
        )
        self._worker = LatestFrameWorker(
            self._process_frame,
            log=self.get_logger(),
            max_rate_hz=self._settings.max_rate_hz,
            name='moa_depth_inference',
        )

        self._publishers_by_topic: dict[str, Any] = {}
        self._create_output_publishers(self._settings.output_reliability)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._diagnostics_timer = self.create_timer(
            self._settings.diagnostics_period_s, self._publish_diagnostics
        )
        self.create_subscription(Image, IMAGE_TOPIC, self._on_image, INPUT_QOS)
        self.create_subscription(CameraInfo, CAMERA_INFO_TOPIC, self._on_camera_info, INPUT_QOS)
        self._compressed_sub = None
        self._set_compressed_subscription(self._settings.subscribe_compressed)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker.start()
        self.get_logger().info(
            f'depth from {self.resolve_topic_name(IMAGE_TOPIC)} with '
            f'{self._engine.describe()}; model file {model_file}'
        )

    def _create_output_publishers(self, reliability: str) -> None:
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=2,
            reliability=_RELIABILITY[reliability],
            durability=DurabilityPolicy.VOLATILE,
        )
        topics = {
            DEPTH_TOPIC: Image,
            DEPTH_INFO_TOPIC: CameraInfo,
            CONFIDENCE_TOPIC: Image,
            POINTS_TOPIC: PointCloud2,
            COLORED_TOPIC: Image,
        }
        with self._publish_lock:
            for publisher in self._publishers_by_topic.values():
                self.destroy_publisher(publisher)
            self._publishers_by_topic = {
                topic: self.create_publisher(msg_type, topic, qos)
                for topic, msg_type in topics.items()
            }

    def _set_compressed_subscription(self, enabled: bool) -> None:
        if enabled and self._compressed_sub is None:
            self._compressed_sub = self.create_subscription(
                CompressedImage, COMPRESSED_TOPIC, self._on_compressed_image, INPUT_QOS
            )
        elif not enabled and self._compressed_sub is not None:
            self.destroy_subscription(self._compressed_sub)
            self._compressed_sub = None

    # -- callbacks (executor thread) ----------------------------------------------------

    def _on_image(self, msg: Image) -> None:
        self._stats.input_frame()
        self._worker.submit(_Frame(msg, False, self._camera_info_msg))

    def _on_compressed_image(self, msg: CompressedImage) -> None:
        self._stats.input_frame()
        self._worker.submit(_Frame(msg, True, self._camera_info_msg))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        if self._camera_info_msg is None:
            self._stats.camera_info_received()
            self.get_logger().info(
                f'camera_info received ({msg.width}x{msg.height}, '
                f'{msg.distortion_model or "no distortion model"})'
            )
        self._camera_info_msg = msg

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        # Parameters this node does not own (use_sim_time, ...) are not ours to reject.
        changes = {p.name: p.value for p in parameters if p.name in params.SPEC_BY_NAME}
        old = self._settings
        try:
            new = old.updated(changes)
            candidate = dataclasses.replace(self._pipeline.config, **new.pipeline_kwargs())
            self._pipeline.depth_range_m(candidate)
            # Humble has no post-set callbacks: apply here, after every check has passed.
            with self._pipeline_lock:
                self._pipeline.update_config(**new.pipeline_kwargs())
                self._settings = new
        except ConfigError as e:
            return SetParametersResult(successful=False, reason=str(e))
        if new.max_rate_hz != old.max_rate_hz:
            self._worker.set_max_rate(new.max_rate_hz)
        if new.output_reliability != old.output_reliability:
            self._create_output_publishers(new.output_reliability)
        if new.subscribe_compressed != old.subscribe_compressed:
            self._set_compressed_subscription(new.subscribe_compressed)
        if new.diagnostics_period_s != old.diagnostics_period_s:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = self.create_timer(
                new.diagnostics_period_s, self._publish_diagnostics
            )
        changed = [
            f'{name}={value!r}' for name, value in changes.items() if getattr(old, name) != value
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

    def _process_frame(self, frame: _Frame) -> None:
        camera, camera_error = self._cameras.update(frame.camera_info)
        if camera_error:
            self.get_logger().warning(
                f'unusable camera_info, publishing depth without a point cloud (calibrate the '
                f'camera, e.g. with camera_calibration): {camera_error}'
            )
        if frame.camera_info is not None:
            self._stats.set_note('camera_info problem', self._cameras.error)
        with self._pipeline_lock:
            settings = self._settings
            if frame.compressed:
                result = self._pipeline.process_compressed_msg(frame.msg, camera)
            else:
                result = self._pipeline.process_msg(frame.msg, camera)
        if settings.publish_cloud and frame.camera_info is None:
            self._stats.set_note('point cloud', 'waiting for camera_info')
            self.get_logger().warning(
                f'no CameraInfo received on {self.resolve_topic_name(CAMERA_INFO_TOPIC)} yet: '
                f'publishing depth without a point cloud (does the camera driver publish '
                f'camera_info, and is it remapped?)',
                throttle_duration_sec=_NO_CAMERA_INFO_LOG_PERIOD_S,
            )
        elif frame.camera_info is not None:
            self._stats.set_note('point cloud', '')
        try:
            self._publish(result, frame.msg.header, settings)
        except Exception:
            # Ctrl-C shuts the context down from rclpy's signal thread while this frame may
            # still be in the network; its publishers then refuse it. That is shutdown, not a
            # failure worth a traceback.
            if not self.context.ok():
                return
            raise
        self._stats.output_frame(result.timings_ms)

    def _publish(self, result: Any, image_header: Any, settings: params.NodeSettings) -> None:
        if not image_header.frame_id:
            self.get_logger().warning(
                'images have an empty header.frame_id: RViz and TF cannot place depth and '
                'points (set the camera driver frame id to the optical frame)',
                once=True,
            )
        # One header for all outputs: the image's stamp and optical frame (REP 103).
        header = Header(
            stamp=Time(sec=int(image_header.stamp.sec), nanosec=int(image_header.stamp.nanosec)),
            frame_id=str(image_header.frame_id),
        )
        with self._publish_lock:
            pubs = self._publishers_by_topic
            depth = Image(header=header)
            msgs.fill_image_msg(depth, msgs.encode_depth(result.depth_m, settings.depth_encoding))
            pubs[DEPTH_TOPIC].publish(depth)
            if result.camera is not None:
                info = _fill_camera_info(
                    CameraInfo(header=header), result.camera.to_camera_info_fields()
                )
                pubs[DEPTH_INFO_TOPIC].publish(info)
            if settings.publish_confidence:
                confidence = Image(header=header)
                msgs.fill_image_msg(confidence, msgs.encode_confidence(result.confidence))
                pubs[CONFIDENCE_TOPIC].publish(confidence)
            if result.cloud is not None:
                cloud = PointCloud2(header=header)
                msgs.fill_cloud_msg(cloud, msgs.encode_cloud(result.cloud), PointField)
                pubs[POINTS_TOPIC].publish(cloud)
            if settings.publish_colored:
                model_min_m, model_max_m = self._engine.depth_range_m
                min_m, max_m = settings.depth_limits_m()
                colored = Image(header=header)
                msgs.fill_image_msg(
                    colored,
                    msgs.encode_colored_depth(
                        result.depth_m, min_m or model_min_m, max_m or model_max_m
                    ),
                )
                pubs[COLORED_TOPIC].publish(colored)

    # -- shutdown -----------------------------------------------------------------------

    def destroy_node(self) -> None:
        """Stop the worker (join), release the engine, then destroy the ROS entities."""
        if self._worker is not None:
            if not self._worker.stop(_STOP_TIMEOUT_S):
                self.get_logger().warning(
                    f'the frame in progress did not finish within {_STOP_TIMEOUT_S:g} s; '
                    f'shutting down without it'
                )
            self._worker = None
        if self._engine is not None:
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
