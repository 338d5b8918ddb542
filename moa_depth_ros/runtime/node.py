"""``depth_node``: the ROS 2 node; with ``lifecycle`` the only modules that import rclpy.

Wiring only. Parameters are specified and validated in ``params``, the newest-frame worker
lives in ``worker``, the frame pipeline (decode, network, back-projection) in ``pipeline``,
message encoding in ``msgs``, /diagnostics statistics in ``diagnostics``.

One code path, two ways to run it (``DepthNodeBase``): ``DepthNode`` configures (loads the
engine) and activates (subscribes, publishes) at construction; ``lifecycle.ManagedDepthNode``
does the same steps on the lifecycle transitions (configure, activate, deactivate, cleanup),
for an ordered bring-up such as Nav2's lifecycle_manager.

Topics (relative, so a namespace and remappings place them; REP 118 / 117 / 103):

- in  ``image`` (sensor_msgs/Image) or ``image/compressed`` (CompressedImage): one transport,
  as image_transport subscribes (``image_transport``); ``camera_info`` (CameraInfo, cached by
  stamp: a frame waits up to _CAMERA_INFO_WAIT_S for the one stamped like it while the
  calibration is new, see ``_camera_info_for``). Reliability follows the publishers
  (``input_reliability: auto``): reliable when every publisher offers it, as rosbag2 records,
  because a best-effort reader silently loses large frames from a reliable camera under Fast
  DDS defaults. Before any
  publisher is known the node reads both ways (a reliable reader hears a reliable camera from
  its first frame, a best-effort one any camera) and takes each frame once; a matched event
  (rclpy >= 4.0) or the one-second graph poll (Humble) then keeps the one that fits.
- out ``outputs.OUTPUTS`` (depth/image_rect, its sibling depth/camera_info, depth/confidence,
  points, depth/colored), all stamped with the image's stamp and optical frame_id, all on one
  rectified grid: raw images are rectified with their camera_info before the network
  (``input_rectified`` declares rectified ones), and depth/camera_info is that rectified
  camera (D = 0, K = P), as depth_image_proc, RViz and Nav2 read it; ``/diagnostics``.
- QoS: every publisher and subscription takes ROS 2's standard ``qos_overrides.<topic>.*``
  parameters (rclpy ``QoSOverridingOptions``): history, depth and reliability of the outputs
  and /diagnostics, history and depth of the inputs (their reliability is
  ``input_reliability``: the one source, since a re-created subscription would reuse the
  first override value on Humble).
- Lazy, as depth_image_proc: with no subscriber on any output the node does not subscribe to
  the image at all (no transfer, no decode, no network; /diagnostics says idle), and it
  subscribes again when an output gets one: on the publisher's matched event (rclpy >= 4.0)
  or at the next graph poll (Humble).

Written against rclpy's API as Humble, Jazzy and Kilted share it, with feature-detected
additions (matched events), and tested on real rclpy (Jazzy, Kilted) over Fast DDS
(test_rclpy_humble_api checks the names used against Humble's source). SIGINT and SIGTERM end
``spin`` with KeyboardInterrupt or ExternalShutdownException, after which the worker is
joined and the context shut down.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import threading
import time
from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException

try:  # Iron and later
    from rclpy.event_handler import (
        PublisherEventCallbacks,
        SubscriptionEventCallbacks,
        UnsupportedEventTypeError,
    )
except ImportError:  # Humble
    from rclpy.qos_event import (
        PublisherEventCallbacks,
        SubscriptionEventCallbacks,
        UnsupportedEventTypeError,
    )
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions, QoSPolicyKind
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from moa_depth_ros.engine import load_engine
from moa_depth_ros.errors import CameraInfoError, ConfigError, MoaDepthError
from moa_depth_ros.frame import cdr, outputs
from moa_depth_ros.frame.geometry import CameraModel, CameraModelCache
from moa_depth_ros.frame.pipeline import DepthPipeline, FrameResult, InferredFrame, PipelineConfig
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
# Output QoS before overrides: reliable (what RViz subscribes with; best-effort readers match
# it too) and five frames for a reliable subscriber that has not acknowledged them yet.
OUTPUT_RELIABILITY = 'reliable'
OUTPUT_HISTORY_DEPTH = 5
DIAGNOSTICS_HISTORY_DEPTH = 10
# qos_overrides.<topic>.publisher.{history,depth,reliability}: rclpy's default set.
_OUTPUT_OVERRIDES = (QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH, QoSPolicyKind.RELIABILITY)
# Inputs take history and depth only: their reliability is input_reliability (it follows the
# publishers), and rclpy declares an override parameter once and reuses its first value when
# a subscription on that topic is re-created (Humble and later), which would pin it.
_INPUT_OVERRIDES = (QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH)
# rclpy >= 4.0 (Iron) reports matched publishers as an event; Humble's callbacks lack it and
# the node polls the graph there.
MATCHED_EVENTS = 'matched' in inspect.signature(SubscriptionEventCallbacks.__init__).parameters
_NO_CAMERA_INFO_LOG_PERIOD_S = 30.0
# CameraInfo messages kept by stamp, so a frame gets the one stamped like itself even when
# the executor hands over the image before the CameraInfo that came with it.
_CAMERA_INFOS_KEPT = 8
# A camera that stamps CameraInfo like its images has its frame wait this long for the one
# stamped like it (a small network can finish before the executor takes the CameraInfo);
# one that does not arrive in time is taken as lost, and the newest serves.
_CAMERA_INFO_WAIT_S = 0.1
# After this many CameraInfos with the same calibration in a row, a frame whose own has not
# arrived takes the newest without waiting: it carries the same calibration. (A publisher
# that sends CameraInfo before its image made Fast DDS deliver a third of them 45-150 ms
# late or never; each such frame waited the full _CAMERA_INFO_WAIT_S.)
_STATIC_CAMERA_INFOS = 10
_CAMERA_MISFIT_LOG_PERIOD_S = 30.0
# How often input_reliability 'auto' looks at the publishers again (a graph query, cheap):
# the only check on Humble, the safety net and the clean-up of replaced subscriptions after.
_GRAPH_POLL_S = 1.0
# A replaced subscription keeps receiving this long, while publishers match its successor.
_RETIRE_AFTER_S = 0.5
# Frames remembered to take a frame once while two subscriptions of a topic deliver it.
_RECENT_FRAMES = 16
# Shutdown waits this long for the frame in the network; SIGINT/SIGTERM must end the
# process promptly, and the worker thread is a daemon.
_STOP_TIMEOUT_S = 1.5


def _calibration(msg: CameraInfo) -> tuple:
    """Return what a CameraInfo says about the camera, without its stamp (equal: same camera)."""
    roi = msg.roi
    return (
        msg.header.frame_id,
        msg.width,
        msg.height,
        msg.distortion_model,
        tuple(msg.d),
        tuple(msg.k),
        tuple(msg.r),
        tuple(msg.p),
        msg.binning_x,
        msg.binning_y,
        (roi.x_offset, roi.y_offset, roi.height, roi.width, roi.do_rectify),
    )


def steady_clock() -> Clock:
    """Return the clock of the node's own timers (ROS time stalls: use_sim_time, no /clock)."""
    return Clock(clock_type=ClockType.STEADY_TIME)


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


def output_qos(depth: int = OUTPUT_HISTORY_DEPTH) -> QoSProfile:
    """QoS of an output publisher before qos_overrides (a new object: rclpy overrides in place)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=_RELIABILITY[OUTPUT_RELIABILITY],
        durability=DurabilityPolicy.VOLATILE,
    )


def follow_publishers(offered: list[Any]) -> tuple[str, ...]:
    """Pick the input reliabilities of ``auto`` from the publishers' offered reliabilities.

    Reliable when every publisher offers it (a reliable reader matches only reliable
    writers); best effort as soon as one publisher is best effort. With no publisher: both,
    so that a camera that comes is heard from its first frame whichever it is.
    """
    if not offered:
        return ('reliable', 'best_effort')
    if all(r == ReliabilityPolicy.RELIABLE for r in offered):
        return ('reliable',)
    return ('best_effort',)


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    """Settings and the pipeline config they imply, swapped together in one assignment."""

    settings: params.NodeSettings
    config: PipelineConfig


@dataclasses.dataclass(frozen=True)
class _InFlight:
    """A frame between the network and its outputs (``frames_in_flight`` 2 hands it over).

    camera_error: the CameraInfo problem the camera cache had when this frame looked up its
    camera (read later, it could be the next frame's).
    """

    header: Any
    snapshot: _Snapshot
    inferred: InferredFrame
    camera_info: Any
    camera_error: str


@dataclasses.dataclass
class _Input:
    """The subscriptions of one input topic, by reliability, and those being retired.

    A subscription that changes reliability is replaced make-before-break: the old one keeps
    receiving for _RETIRE_AFTER_S while the publishers discover the new reader. A frame
    both deliver is taken once (same stamp and frame).
    """

    subscriptions: dict[str, Any] = dataclasses.field(default_factory=dict)
    retiring: list[tuple[Any, float]] = dataclasses.field(default_factory=list)

    def all(self) -> list[Any]:
        return [*self.subscriptions.values(), *(sub for sub, _ in self.retiring)]


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


class DepthNodeBase:
    """The node's one code path; mixed into rclpy's ``Node`` or ``LifecycleNode`` (``self``).

    ``_configure`` loads the engine, ``_activate`` creates the publishers, subscriptions,
    timers and the inference thread, ``_deactivate`` destroys them (the engine stays),
    ``_cleanup`` releases the engine. Parameters are declared at construction and can be set
    in every state; a change takes effect on the entities that exist.
    """

    def _init_depth_node(self) -> None:
        self._snapshot: _Snapshot | None = None  # configured: settings + pipeline config
        self._engine = None
        self._pipeline: DepthPipeline | None = None
        self._stats: diagnostics.NodeStatistics | None = None
        self._model_file = None
        self._active = False
        self._worker: LatestFrameWorker[Any] | None = None  # Image or CompressedImage
        self._worker_stuck = False  # a frame outlived _STOP_TIMEOUT_S: the engine is busy
        # Held while publishing and while publishers are created or destroyed.
        self._publish_lock = threading.Lock()
        self._publishers_by_topic: dict[str, Any] = {}
        self._diagnostics_pub = None
        self._diagnostics_timer = None
        self._graph_timer = None
        self._graph_changed = None  # guard condition a matched event triggers
        self._inputs: dict[str, _Input] = {}
        self._replacing = False
        self._recent_frames: collections.deque[tuple] = collections.deque(maxlen=_RECENT_FRAMES)
        self._camera_info_msg = None  # the newest
        self._camera_info_content: tuple = ()  # its calibration, for _STATIC_CAMERA_INFOS
        self._camera_infos_unchanged = 0  # CameraInfos in a row with that calibration
        self._camera_infos: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
        self._camera_infos_lock = threading.Lock()
        # Notified when a CameraInfo arrives; a frame may be waiting for its own.
        self._camera_info_arrived = threading.Condition(self._camera_infos_lock)
        # Whether the last frame found a CameraInfo stamped like itself (worker thread only).
        self._camera_info_paired = False
        self._cameras = CameraModelCache()  # used on the worker thread only
        # Whether the middleware reports images lost on their way in (False: it cannot tell).
        self._loss_reported = True
        for spec in params.SPECS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- lifecycle steps ----------------------------------------------------------------

    def _parameter_settings(self) -> params.NodeSettings:
        values = {spec.name: self.get_parameter(spec.name).value for spec in params.SPECS}
        return params.NodeSettings.from_values(values)

    def _configure(self) -> None:
        """Load the engine and build the pipeline (MoaDepthError: nothing is kept)."""
        settings = self._parameter_settings()
        model_file = params.resolve_model_path(settings.model_path, params.find_package_share())
        engine = load_engine(model_file, **settings.engine_kwargs())
        try:
            # min/max against the model range: ConfigError
            pipeline = DepthPipeline(engine, PipelineConfig(**settings.pipeline_kwargs()))
        except BaseException:
            engine.close()
            raise
        self._engine, self._pipeline, self._model_file = engine, pipeline, model_file
        # A frame reads this once; a parameter change replaces it in one assignment, so a
        # frame sees the old or the new settings whole and nothing waits for inference.
        self._snapshot = _Snapshot(settings, pipeline.config)
        self._stats = diagnostics.NodeStatistics(backend=engine.backend, model=engine.describe())

    def _activate(self) -> None:
        """Publish, subscribe, run timers and the inference thread."""
        settings = self._settings
        # An output that gains or loses its first subscriber subscribes or drops the image.
        events = {'matched': self._on_graph_event} if MATCHED_EVENTS else {}
        with self._publish_lock:
            self._publishers_by_topic = {
                output.key: self.create_publisher(
                    _MESSAGE_CLASSES[output.msgtype],
                    output.topic,
                    output_qos(),
                    event_callbacks=PublisherEventCallbacks(**events),
                    qos_overriding_options=QoSOverridingOptions(_OUTPUT_OVERRIDES),
                )
                for output in outputs.OUTPUTS
            }
        self._diagnostics_pub = self.create_publisher(
            DiagnosticArray,
            DIAGNOSTICS_TOPIC,
            output_qos(DIAGNOSTICS_HISTORY_DEPTH),
            qos_overriding_options=QoSOverridingOptions(_OUTPUT_OVERRIDES),
        )
        self._worker = LatestFrameWorker(
            self._infer_frame,
            finish=self._finish_frame,
            frames_in_flight=settings.frames_in_flight,
            log=self.get_logger(),
            max_rate_hz=settings.max_rate_hz,
            name='moa_depth_inference',
        )
        self._worker.start()
        self._worker_stuck = False
        self._diagnostics_timer = self.create_timer(
            settings.diagnostics_period_s, self._publish_diagnostics, clock=steady_clock()
        )
        self._active = True
        self._graph_changed = self.create_guard_condition(self._refresh_inputs)
        self._refresh_inputs()
        self._graph_timer = self.create_timer(
            _GRAPH_POLL_S, self._refresh_inputs, clock=steady_clock()
        )
        self.get_logger().info(
            f'depth from {self.resolve_topic_name(self._image_topic())} with '
            f'{self._engine.describe()}; model file {self._model_file}'
        )

    def _deactivate(self) -> None:
        """Stop the inference thread, then destroy subscriptions, timers and publishers."""
        self._active = False
        if self._worker is not None:
            if not self._worker.stop(_STOP_TIMEOUT_S):
                self._worker_stuck = True
                self.get_logger().warning(
                    f'the frame in progress did not finish within {_STOP_TIMEOUT_S:g} s; '
                    f'going on without it'
                )
            self._worker = None
        for current in self._inputs.values():
            for subscription in current.all():
                self.destroy_subscription(subscription)
        self._inputs.clear()
        self._replacing = False
        for timer in (self._graph_timer, self._diagnostics_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._graph_timer = self._diagnostics_timer = None
        if self._graph_changed is not None:
            self.destroy_guard_condition(self._graph_changed)
            self._graph_changed = None
        with self._publish_lock:
            for publisher in self._publishers_by_topic.values():
                self.destroy_publisher(publisher)
            self._publishers_by_topic = {}
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_pub = None

    def _cleanup(self) -> None:
        """Release the engine (configure loads it again)."""
        if self._engine is not None and not self._worker_stuck:
            # An engine still running a frame (GPU buffers in use) is left to process exit.
            self._engine.close()
        self._engine = self._pipeline = self._snapshot = self._stats = None
        with self._camera_infos_lock:
            self._camera_info_msg = None
            self._camera_infos.clear()
            # A new configuration learns the camera again: the first frames wait for theirs.
            self._camera_info_content, self._camera_infos_unchanged = (), 0
            self._camera_info_paired = False
        self._cameras = CameraModelCache()

    def _release(self) -> None:
        """Whatever the state: deactivate and clean up (shutdown, errors, destroy_node)."""
        if self._active or self._worker is not None:
            self._deactivate()
        if self._snapshot is not None or self._engine is not None:
            self._cleanup()

    def destroy_node(self) -> None:
        """Stop the worker (join), release the engine, then destroy the ROS entities."""
        if hasattr(self, '_publish_lock'):  # construction got as far as _init_depth_node
            self._release()
        super().destroy_node()

    @property
    def _settings(self) -> params.NodeSettings:
        return self._snapshot.settings

    @property
    def is_active(self) -> bool:
        """True while the node subscribes, processes and publishes."""
        return self._active

    # -- inputs ---------------------------------------------------------------------------

    def _image_topic(self) -> str:
        return COMPRESSED_TOPIC if self._settings.image_transport == 'compressed' else IMAGE_TOPIC

    def _input_topics(self) -> dict[str, tuple[Any, Any]]:
        """Map each input topic wanted now to (message type, callback).

        One image transport, and the image only while some output has a subscriber (lazy);
        camera_info always (small, and cached for the first frame).
        """
        topics = {CAMERA_INFO_TOPIC: (CameraInfo, self._on_camera_info)}
        if not self._listened():
            return topics
        if self._settings.image_transport == 'compressed':
            topics[COMPRESSED_TOPIC] = (CompressedImage, self._on_compressed_image)
        else:
            topics[IMAGE_TOPIC] = (Image, self._on_image)
        return topics

    def _refresh_inputs(self) -> None:
        """Create, retire or drop input subscriptions to match settings and publishers."""
        if not self._active:
            return
        mode = self._settings.input_reliability
        wanted = self._input_topics()
        now = time.monotonic()
        for topic in [t for t in self._inputs if t not in wanted]:
            for subscription in self._inputs.pop(topic).all():
                self.destroy_subscription(subscription)
        for topic, (msg_type, callback) in wanted.items():
            current = self._inputs.setdefault(topic, _Input())
            kept = []
            for subscription, since in current.retiring:
                if now - since >= _RETIRE_AFTER_S:
                    self.destroy_subscription(subscription)
                else:
                    kept.append((subscription, since))
            current.retiring = kept
            if mode == 'auto':
                offered = [
                    info.qos_profile.reliability
                    for info in self.get_publishers_info_by_topic(self.resolve_topic_name(topic))
                ]
                reliabilities = follow_publishers(offered)
            else:
                reliabilities = (mode,)
            before = tuple(current.subscriptions)
            if set(before) == set(reliabilities):
                continue
            for reliability in reliabilities:
                if reliability not in current.subscriptions:
                    current.subscriptions[reliability] = self._subscribe(
                        msg_type, topic, callback, reliability
                    )
            for reliability in [r for r in current.subscriptions if r not in reliabilities]:
                current.retiring.append((current.subscriptions.pop(reliability), now))
            if before:
                self.get_logger().info(
                    f'{self.resolve_topic_name(topic)}: now subscribed '
                    f'{" and ".join(reliabilities)} (input_reliability {mode})'
                )
        # Two image subscriptions deliver each frame twice: _take takes it once meanwhile.
        image = self._inputs.get(self._image_topic())
        self._replacing = image is not None and len(image.all()) > 1

    def _subscribe(self, msg_type: Any, topic: str, callback: Any, reliability: str) -> Any:
        # A publisher that matches, or one whose QoS the reader cannot match (a best-effort
        # camera beside the reliable reader), is a reason to look at the publishers now.
        events: dict[str, Callable[[Any], None]] = {'incompatible_qos': self._on_graph_event}
        if MATCHED_EVENTS:
            events['matched'] = self._on_graph_event
        if topic != CAMERA_INFO_TOPIC and self._loss_reported:
            events['message_lost'] = functools.partial(self._on_message_lost, topic, reliability)
        try:
            return self.create_subscription(
                msg_type,
                topic,
                callback,
                input_qos(reliability),
                event_callbacks=SubscriptionEventCallbacks(**events) if events else None,
                qos_overriding_options=QoSOverridingOptions(_INPUT_OVERRIDES),
            )
        except UnsupportedEventTypeError:  # an RMW without the message-lost / matched events
            self._loss_reported = False
            return self.create_subscription(
                msg_type,
                topic,
                callback,
                input_qos(reliability),
                qos_overriding_options=QoSOverridingOptions(_INPUT_OVERRIDES),
            )

    def input_reliability(self, topic: str = IMAGE_TOPIC) -> str | None:
        """Return the input reliability of a topic now (None: not subscribed).

        'reliable', 'best_effort', or both ('reliable+best_effort') before any publisher is
        known.
        """
        current = self._inputs.get(topic)
        if current is None or not current.subscriptions:
            return None
        return '+'.join(sorted(current.subscriptions, reverse=True))

    def _on_graph_event(self, info: Any) -> None:
        if self._graph_changed is None:  # deactivated meanwhile
            return
        # Not here: this runs inside the subscription's event handler, which the refresh may
        # destroy. The guard condition runs it as a callback of its own, on the next spin.
        self._graph_changed.trigger()

    def _listened(self) -> bool:
        """Tell whether some output has a subscriber (else frames are not processed)."""
        with self._publish_lock:
            publishers = list(self._publishers_by_topic.values())
        return any(publisher.get_subscription_count() > 0 for publisher in publishers)

    # -- callbacks (executor thread) ----------------------------------------------------

    def _on_image(self, msg: Image) -> None:
        self._take(msg, compressed=False)

    def _on_compressed_image(self, msg: CompressedImage) -> None:
        self._take(msg, compressed=True)

    def _take(self, msg: Any, compressed: bool) -> None:
        stamp = msg.header.stamp
        key = (compressed, stamp.sec, stamp.nanosec, msg.header.frame_id)
        # While two subscriptions of the topic deliver each frame: take it once. (Only then:
        # a camera that stamps every frame alike must not lose all but the first.)
        if self._replacing:
            if key in self._recent_frames:
                return
            self._recent_frames.append(key)
        stats, worker = self._stats, self._worker
        if stats is None or worker is None:  # deactivated while the executor held the frame
            return
        stats.input_frame()
        if not self._listened():
            stats.idle_frame()  # nobody to publish to: no decode, no network
            return
        worker.submit(msg)

    def _on_message_lost(self, topic: str, reliability: str, info: Any) -> None:
        # A loss counts when the subscription that reported it is the topic's only reader:
        # beside a reliable twin (no publisher known yet, or a replacement), a best-effort
        # reader's losses are frames the twin delivered.
        current = self._inputs.get(topic)
        stats = self._stats
        if stats is None or current is None or len(current.all()) != 1:
            return
        if reliability in current.subscriptions:
            stats.frames_lost(int(info.total_count_change))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        content = _calibration(msg)
        with self._camera_infos_lock:  # before anything slow: a frame may be waiting for it
            first = self._camera_info_msg is None
            if content == self._camera_info_content:
                self._camera_infos_unchanged += 1
            else:
                self._camera_info_content, self._camera_infos_unchanged = content, 1
            self._camera_infos[key] = msg
            self._camera_infos.move_to_end(key)
            while len(self._camera_infos) > _CAMERA_INFOS_KEPT:
                self._camera_infos.popitem(last=False)
            self._camera_info_msg = msg
            self._camera_info_arrived.notify_all()
        if first and self._stats is not None:
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
        for its own: an image can reach the node before the CameraInfo sent with it. Not
        while the calibration has stayed the same for _STATIC_CAMERA_INFOS CameraInfos: the
        newest then describes this frame as well as its own would. The price: when such a
        camera changes its calibration (a zoom), the first frame of the new one may run with
        the old one if its CameraInfo is late; the streak then starts again, and the frames
        after it wait for theirs.
        """
        key = (image_header.stamp.sec, image_header.stamp.nanosec)
        with self._camera_info_arrived:
            if self._camera_info_paired and self._camera_infos_unchanged < _STATIC_CAMERA_INFOS:
                self._camera_info_arrived.wait_for(
                    lambda: key in self._camera_infos, timeout=_CAMERA_INFO_WAIT_S
                )
            info = self._camera_infos.get(key)
            self._camera_info_paired = info is not None
            return self._camera_info_msg if info is None else info

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        # Parameters this node does not own (use_sim_time, qos_overrides, ...) are not ours
        # to reject.
        changes = {p.name: p.value for p in parameters if p.name in params.SPEC_BY_NAME}
        old = self._snapshot
        if old is None:  # unconfigured: checked now, read by configure
            try:
                self._parameter_settings().updated(changes)
            except ConfigError as e:
                return SetParametersResult(successful=False, reason=str(e))
            return SetParametersResult(successful=True)
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
        if self._active:
            self._apply_to_entities(old.settings, new)
        changed = [
            f'{name}={value!r}'
            for name, value in changes.items()
            if getattr(old.settings, name) != value
        ]
        if changed:
            self.get_logger().info('parameters changed: ' + ', '.join(changed))
        return SetParametersResult(successful=True)

    def _apply_to_entities(self, old: params.NodeSettings, new: params.NodeSettings) -> None:
        """Make the worker, subscriptions and timers of an active node follow new settings."""
        if new.max_rate_hz != old.max_rate_hz and self._worker is not None:
            self._worker.set_max_rate(new.max_rate_hz)
        if (new.image_transport, new.input_reliability) != (
            old.image_transport,
            old.input_reliability,
        ):
            self._refresh_inputs()
        if new.diagnostics_period_s != old.diagnostics_period_s:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = self.create_timer(
                new.diagnostics_period_s, self._publish_diagnostics, clock=steady_clock()
            )

    def _publish_diagnostics(self) -> None:
        worker, stats = self._worker, self._stats
        if worker is None or stats is None or self._diagnostics_pub is None:
            return
        worker_stats = worker.stats
        snapshot = stats.snapshot(
            dropped=worker_stats.dropped,
            failed=worker_stats.failed,
            last_error=worker_stats.last_error,
            cloud_enabled=self._settings.publish_cloud,
            worker_stopped=worker_stats.stopped,
            loss_reported=self._loss_reported,
            listened=self._listened(),
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

    def _infer_frame(self, msg: Any) -> _InFlight:
        """Run the network's half of a frame: camera lookup, decode, rectify, network."""
        snapshot = self._snapshot  # one consistent view of the settings for this frame
        used: list[Any] = [None]

        def camera() -> Any:
            # Looked up before the network, which sees the image rectified with it; the wait
            # for the CameraInfo stamped like the image (_camera_info_for) covers an executor
            # that hands over the image first.
            used[0] = camera_info = self._camera_info_for(msg.header)
            model, error = self._cameras.update(camera_info)
            if error:
                self.get_logger().warning(
                    f'unusable camera_info, publishing depth without a point cloud (calibrate '
                    f'the camera, e.g. with camera_calibration): {error}'
                )
            return model

        inferred = self._pipeline.infer_msg(msg, camera, snapshot.config)
        return _InFlight(msg.header, snapshot, inferred, used[0], self._cameras.error)

    def _finish_frame(self, frame: _InFlight) -> None:
        """Run the outputs' half of a frame: postprocess, cloud, publish, statistics."""
        settings = frame.snapshot.settings
        camera_info = frame.camera_info
        result = self._pipeline.finish(frame.inferred)
        if result.camera_error:
            self.get_logger().warning(
                f'camera_info does not fit the image, publishing depth without a point cloud: '
                f'{result.camera_error}',
                throttle_duration_sec=_CAMERA_MISFIT_LOG_PERIOD_S,
            )
        self._report_scale(result)
        if camera_info is not None:
            self._stats.set_note('camera_info problem', frame.camera_error or result.camera_error)
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
            self._publish(result, frame.header, settings)
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
                f"x{result.depth_scale:.3f}: this camera's rectified focal length (P) over the "
                f"model's canonical one"
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
            if not self._active:  # deactivated while this frame was in the network
                return
            for output in serialized:
                self._publishers_by_topic[output.key].publish(output.data)


class DepthNode(DepthNodeBase, Node):
    """Monocular metric depth: image (+ camera_info) in; depth, confidence, points out.

    Configured and active from construction to ``destroy_node``; ``lifecycle.ManagedDepthNode``
    is the same node with the steps on lifecycle transitions.
    """

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        try:
            self._init_depth_node()
            self._configure()
            self._activate()
        except BaseException:
            self.destroy_node()
            raise


def run(make_node: Callable[[], Node], args: list[str] | None = None) -> int:
    """Init rclpy, build the node, spin it until Ctrl-C / SIGTERM; the exit status."""
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
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C: Humble raises KeyboardInterrupt, Jazzy ExternalShutdownException
    except (MoaDepthError, ParameterException) as e:
        # A configuration mistake: one line naming it, not a traceback.
        get_logger(NODE_NAME).fatal(f'cannot start: {e}{parameter_hint(e)}')
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def parameter_hint(error: Exception) -> str:
    """Return a hint for the parameter mistake ROS 2 users make most (typed doubles)."""
    if "expecting type 'DOUBLE'" in str(error):
        return ' (ROS 2 parameters are typed: write a decimal point, e.g. 10.0, not 10)'
    return ''


def main(args: list[str] | None = None) -> int:
    """Console script ``depth_node`` (``ros2 run moa_depth_ros depth_node``)."""
    return run(DepthNode, args)
