"""``moa-depth bench --live``: depth_node on real ROS 2 with a camera and a viewer.

Three processes on a ROS domain of their own, discovery kept on this host: a camera that
publishes 640x480 rgb8 images and their CameraInfo at 15 Hz (reliable, as camera drivers
do), ``depth_node`` as ``ros2 run`` starts it, and a viewer subscribed to depth,
depth/camera_info, depth/confidence and points (reliable, as RViz and depth_image_proc are)
that records when each arrives. Measured while the camera streams:

- delivery: frames with depth received over frames sent, and frames for which depth and
  depth/camera_info both arrived (what a synchronizing consumer can use);
- latency from the camera stamp to the depth received: median and p90;
- CPU of the node process per frame (user + system time of all its threads over the
  streaming window, divided by the frames it published), against the CPU the pipeline alone
  takes for the same frame in this process (same model, backend and threads, paced like the
  camera): the difference is what ROS costs (receiving, publishing, the executor), shown
  beside the node's own publish time and the cost of copying one frame's output bytes once;
- the node's CPU while idle (started, no camera), in % of one core;
- navigation: the clouds a subscriber with Nav2's costmap QoS (SensorDataQoS: best effort,
  keep last 5) receives, as its own process, over the clouds the reliable viewer receives,
  and the size of the cloud (points, KiB) that costs an RViz user.

Each role runs as ``python -m moa_depth_ros.bench.live ROLE SPEC_JSON``; ``measure_live``
orchestrates them. Needs rclpy and the message packages (ROS 2, or the ros-jazzy-* wheels).
On a development machine run it inside a private network namespace (``make bench`` does).
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from moa_depth_ros.bench import measure
from moa_depth_ros.errors import MoaDepthError
from moa_depth_ros.frame.geometry import decimation_for_budget
from moa_depth_ros.frame.outputs import CAMERA_INFO, IMAGE, OUTPUT_BY_KEY, OUTPUTS, POINT_CLOUD
from moa_depth_ros.frame.pipeline import PipelineConfig

# What the viewer subscribes to, and their types: the node's default outputs (not the
# colour preview).
OUTPUT_TYPES = {output.topic: output.msgtype for output in OUTPUTS if output.key != 'colored'}
OUTPUT_TOPICS = tuple(OUTPUT_TYPES)
DEPTH_TOPIC = OUTPUT_BY_KEY['depth'].topic
DEPTH_INFO_TOPIC = OUTPUT_BY_KEY['depth_info'].topic
POINTS_TOPIC = OUTPUT_BY_KEY['points'].topic
NODE_NAME = 'moa_depth_node'  # runtime.node.NODE_NAME (a test holds them equal: no rclpy here)
CLK_TCK = os.sysconf('SC_CLK_TCK') if hasattr(os, 'sysconf') else 100


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads so far (Linux /proc)."""
    with open(f'/proc/{pid}/stat', encoding='ascii') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _cpu_of(roles: dict[str, Any]) -> dict[str, float]:
    """CPU seconds so far of each role's process (see ``process_cpu_s``)."""
    return {name: process_cpu_s(child.process.pid) for name, child in roles.items()}


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def _ros_env(domain_id: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(domain_id),
        # Discovery stays on this host: Jazzy and later read the first, Humble the second.
        ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
        ROS_LOCALHOST_ONLY='1',
        PYTHONUNBUFFERED='1',
        RCUTILS_COLORIZED_OUTPUT='0',
    )
    env.pop('ROS_STATIC_PEERS', None)
    return env


# -------------------------------------------------------------------------------- the roles


def _camera(spec: dict[str, Any]) -> dict[str, Any]:
    """Publish frames at ``rate_hz`` once depth_node listens reliably; return the stamps."""
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from moa_depth_ros.frame import msgs

    rclpy.init()
    node = Node('bench_camera')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = node.create_publisher(Image, 'image', qos)
    info_pub = node.create_publisher(CameraInfo, 'camera_info', qos)
    width, height = spec['width'], spec['height']
    fields = msgs.encode_rgb(measure.synthetic_rgb(width, height))
    calibration = measure.synthetic_camera(width, height).to_camera_info_fields()
    info = CameraInfo(width=width, height=height, distortion_model=calibration['distortion_model'])
    for name in ('d', 'k', 'r', 'p'):
        setattr(info, name, [float(v) for v in calibration[name]])
    info.header.frame_id = 'bench_camera_optical'

    def node_listens_reliably() -> bool:
        infos = node.get_subscriptions_info_by_topic(node.resolve_topic_name('image'))
        return any(
            i.node_name == NODE_NAME and i.qos_profile.reliability == ReliabilityPolicy.RELIABLE
            for i in infos
        )

    deadline = time.monotonic() + spec['ready_timeout_s']
    # input_reliability auto follows this reliable camera within a second; the subscription
    # it replaces goes a second later.
    while not (node_listens_reliably() and image_pub.get_subscription_count() == 1):
        if time.monotonic() > deadline:
            raise TimeoutError('depth_node did not subscribe reliably to the camera')
        rclpy.spin_once(node, timeout_sec=0.1)
    sent: list[list[int]] = []
    period_s = 1.0 / spec['rate_hz']
    total = spec['warmup_frames'] + spec['frames']
    start = time.monotonic()
    for i in range(total):
        if i == spec['warmup_frames']:
            print('measure-start', flush=True)
        now = node.get_clock().now().to_msg()
        image = Image()
        image.header.stamp = now
        image.header.frame_id = info.header.frame_id
        msgs.fill_image_msg(image, fields)
        info.header.stamp = now
        # Image, then its CameraInfo, as image_transport's CameraPublisher::publish sends them
        # (image_transport/src/camera_publisher.cpp), which camera drivers use. (Sent the other
        # way round, Fast DDS delivered a third of the CameraInfos 45-150 ms late or never.)
        image_pub.publish(image)
        info_pub.publish(info)
        if i >= spec['warmup_frames']:
            sent.append([now.sec, now.nanosec])
        time.sleep(max(0.0, start + (i + 1) * period_s - time.monotonic()))
    print('measure-end', flush=True)
    time.sleep(1.0)  # reliable delivery of the last frames before the writer goes away
    node.destroy_node()
    rclpy.try_shutdown()
    return {'sent': sent, 'period_s': period_s}


def publisher_count(node: Any, subscription: Any) -> int:
    """Count the publishers matched to ``subscription`` (Humble: of its topic, from the graph).

    Humble's Subscription has no get_publisher_count(); the node's graph count of the topic
    is what it offers there.
    """
    count = getattr(subscription, 'get_publisher_count', None)
    if count is not None:
        return count()
    return node.count_publishers(subscription.topic_name)


def _spin_until_interrupted(node: Any) -> None:
    """Say 'ready' to the orchestrator, then spin a subscriber role until SIGINT ends it."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    print('ready', flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _viewer(spec: dict[str, Any]) -> dict[str, Any]:
    """Record the arrival time of every output by stamp until SIGINT; return them."""
    from diagnostic_msgs.msg import DiagnosticArray
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    rclpy.init()
    node = Node('bench_viewer')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    arrivals: dict[str, dict[str, float]] = {topic: {} for topic in OUTPUT_TOPICS}
    last_status: dict[str, Any] = {}

    def record(topic: str) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            stamp = msg.header.stamp
            arrivals[topic][f'{stamp.sec}.{stamp.nanosec:09d}'] = time.time()

        return callback

    classes = {IMAGE: Image, CAMERA_INFO: CameraInfo, POINT_CLOUD: PointCloud2}
    subscriptions = [
        node.create_subscription(classes[msgtype], topic, record(topic), qos)
        for topic, msgtype in OUTPUT_TYPES.items()
    ]
    deadline = time.monotonic() + spec['ready_timeout_s']
    while not all(publisher_count(node, s) >= 1 for s in subscriptions):  # discovery done
        if time.monotonic() > deadline:
            raise TimeoutError('depth_node publishes none of its outputs to the viewer')
        rclpy.spin_once(node, timeout_sec=0.1)

    def diagnostics(array: Any) -> None:
        for status in array.status:
            if status.name.startswith(NODE_NAME) or NODE_NAME in status.name:
                last_status.update(
                    message=status.message, values={kv.key: kv.value for kv in status.values}
                )

    node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics, 10)
    _spin_until_interrupted(node)
    return {'arrivals': arrivals, 'diagnostics': last_status}


def _navigation(spec: dict[str, Any]) -> dict[str, Any]:
    """Record the clouds a Nav2 costmap layer would get (SensorDataQoS) until SIGINT."""
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    rclpy.init()
    node = Node('bench_navigation')
    arrivals: dict[str, float] = {}
    cloud: dict[str, int] = {}

    def callback(msg: Any) -> None:
        stamp = msg.header.stamp
        arrivals[f'{stamp.sec}.{stamp.nanosec:09d}'] = time.time()
        cloud.update(points=msg.width * msg.height, bytes=len(msg.data))

    node.create_subscription(PointCloud2, POINTS_TOPIC, callback, qos_profile_sensor_data)
    deadline = time.monotonic() + spec['ready_timeout_s']
    while node.count_publishers(node.resolve_topic_name(POINTS_TOPIC)) < 1:
        if time.monotonic() > deadline:
            raise TimeoutError('depth_node publishes no points to the navigation subscriber')
        rclpy.spin_once(node, timeout_sec=0.1)
    _spin_until_interrupted(node)
    return {'arrivals': arrivals, 'cloud': cloud}


ROLES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    'camera': _camera,
    'viewer': _viewer,
    'navigation': _navigation,
}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m moa_depth_ros.bench.live ROLE SPEC_JSON OUT_JSON``."""
    role, spec_json, out_path = (sys.argv[1:] if argv is None else list(argv))[:3]
    result = ROLES[role](json.loads(spec_json))
    pathlib.Path(out_path).write_text(json.dumps(result), encoding='utf-8')
    return 0


# ----------------------------------------------------------------------------- orchestration


class _Child:
    """A child process whose stdout lines are read by a thread (so none blocks on a pipe)."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
        )
        self.lines: list[str] = []
        self._events: dict[str, float] = {}
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._cond:
                self.lines.append(line.rstrip('\n'))
                self._cond.notify_all()

    def wait_line(self, text: str, timeout_s: float) -> bool:
        """Wait until a line containing ``text`` was printed; False on timeout or exit."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if any(text in line for line in self.lines):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():  # timed out, or exited
                    return False
                self._cond.wait(min(remaining, 0.2))

    def output(self) -> str:
        with self._cond:
            return '\n'.join(self.lines[-40:])

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5.0)
        self._thread.join(5.0)
        return self.process.returncode


class LiveRunError(MoaDepthError, RuntimeError):
    """A process of the live run (node, camera or viewer) did not start or finish."""


def _node_command(
    model_path: str,
    backend: str,
    device: str,
    threads: int | None,
    spin_wait: bool,
    precision: str = 'auto',
    node_params: dict[str, Any] | None = None,
) -> list[str]:
    launcher = 'import sys; from moa_depth_ros.runtime.node import main; sys.exit(main(sys.argv))'
    cmd = [sys.executable, '-c', launcher, '--ros-args', '-p', f'model_path:={model_path}']
    cmd += ['-p', f'backend:={backend}', '-p', f'device:={device}']
    cmd += ['-p', f'precision:={precision}']
    cmd += ['-p', 'diagnostics_period_s:=0.5']
    cmd += ['-p', f'cpu_spin_wait:={str(spin_wait).lower()}']
    if threads:
        cmd += ['-p', f'cpu_threads:={int(threads)}']
    for name, value in (node_params or {}).items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        cmd += ['-p', f'{name}:={text}']
    return cmd


def _read_result(path: pathlib.Path, child: _Child) -> dict[str, Any]:
    """Read what a camera or viewer process wrote; a missing or broken file is LiveRunError."""
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as e:
        raise LiveRunError(f'{path.stem} left no results ({e}):\n{child.output()}') from None


def output_bytes_per_frame(width: int, height: int, cloud_bytes: int | None = None) -> int:
    """Bytes of one frame's outputs: depth and confidence (32FC1) and the cloud.

    ``cloud_bytes`` None: the default organized rgb cloud, auto-decimated to the pipeline's
    default budget (``geometry.decimation_for_budget``).
    """
    if cloud_bytes is None:
        n = decimation_for_budget(width, height, 16, PipelineConfig().cloud_budget_bytes)
        cloud_bytes = -(-width // n) * -(-height // n) * 16
    return width * height * (4 + 4) + cloud_bytes


def pipeline_cpu(
    model_path: str,
    backend: str,
    threads: int | None,
    width: int,
    height: int,
    frames: int = 45,
    rate_hz: float = 15.0,
    spin_wait: bool = False,
    device: str = 'auto',
    precision: str = 'auto',
) -> dict[str, float]:
    """CPU and wall ms per frame of the pipeline alone, in this process, paced like a camera.

    The same model, backend, device, threads and frame as the live run, and no ROS: what the node's
    process would spend if publishing cost nothing. Process CPU covers every thread (ONNX
    Runtime's pool too), so a multi-threaded network counts in full.
    """
    engine, pipeline = measure.load_pipeline(
        {
            'model_path': model_path,
            'backend': backend,
            'device': device,
            'threads': threads,
            'spin_wait': spin_wait,
            'precision': None if precision == 'auto' else precision,
        }
    )
    try:
        msg = measure.rgb8_message(measure.synthetic_rgb(width, height))
        camera = measure.synthetic_camera(width, height)
        for _ in range(3):
            pipeline.process_msg(msg, camera)
        walls = []
        cpu_start, start = time.process_time(), time.monotonic()
        for i in range(frames):
            begin = time.perf_counter()
            pipeline.process_msg(msg, camera)
            walls.append((time.perf_counter() - begin) * 1e3)
            time.sleep(max(0.0, start + (i + 1) / rate_hz - time.monotonic()))
        cpu_ms = (time.process_time() - cpu_start) * 1e3 / frames
    finally:
        engine.close()
    return {'cpu_ms': cpu_ms, 'wall_ms': float(np.median(walls))}


def _stage_means(values: dict[str, str]) -> dict[str, float]:
    """Stage -> mean ms from the node's /diagnostics values ('latency X (ms)': 'mean a, max b')."""
    means = {}
    for key, value in values.items():
        if key.startswith('latency ') and key.endswith(' (ms)') and value.startswith('mean '):
            means[key[len('latency ') : -len(' (ms)')]] = float(value.split(',')[0][5:])
    return means


def measure_live(
    model_path: str,
    *,
    backend: str = 'onnxruntime',
    device: str = 'auto',
    threads: int | None = None,
    spin_wait: bool = False,
    precision: str = 'auto',
    frames: int = 300,
    warmup_frames: int = 30,
    rate_hz: float = 15.0,
    width: int = 640,
    height: int = 480,
    idle_s: float = 10.0,
    domain_id: int | None = None,
    node_params: dict[str, Any] | None = None,
    fastdds_profile: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Run the node, a camera and a viewer as processes; return what the module doc lists.

    ``node_params``: further depth_node parameters (name -> value), e.g. frames_in_flight.
    ``fastdds_profile``: a Fast DDS XML profile every process loads
    (FASTRTPS_/FASTDDS_DEFAULT_PROFILES_FILE), e.g. ``config/fastdds_large_frames.xml``;
    None: the environment's.

    ``domain_id``: the ROS domain of the three processes (default: a random one, so the run
    never meets another graph on this machine).
    """
    if domain_id is None:
        domain_id = random.SystemRandom().randrange(1, 200)
    # The node resolves a relative model_path against its share directory, not this
    # process's working directory: hand it the file this process means.
    model_path = os.path.abspath(model_path)
    env = _ros_env(domain_id)
    if fastdds_profile:
        # Fast DDS 2 (Humble, Jazzy) reads the first name, Fast DDS 3 (Kilted) prefers the second.
        for name in ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE'):
            env[name] = os.path.abspath(fastdds_profile)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix='moa_depth_live_'))
    spec = {
        'width': width,
        'height': height,
        'rate_hz': rate_hz,
        'frames': frames,
        'warmup_frames': warmup_frames,
        'ready_timeout_s': 60.0,
    }
    role = [sys.executable, '-m', 'moa_depth_ros.bench.live']
    log('live: the pipeline alone, in this process, for comparison ...')
    alone = pipeline_cpu(
        model_path,
        backend,
        threads,
        width,
        height,
        rate_hz=rate_hz,
        spin_wait=spin_wait,
        device=device,
        precision=precision,
    )
    node = _Child(
        _node_command(model_path, backend, device, threads, spin_wait, precision, node_params),
        env,
    )
    viewer = camera = navigation = None
    try:
        if not node.wait_line('depth from', 120.0):
            raise LiveRunError(f'depth_node did not start:\n{node.output()}')
        log(f'live: node idle for {idle_s:g} s ...')
        time.sleep(1.0)  # past the start-up work
        cpu0, t0 = process_cpu_s(node.process.pid), time.monotonic()
        time.sleep(idle_s)
        idle_core_share = (process_cpu_s(node.process.pid) - cpu0) / (time.monotonic() - t0)

        viewer = _Child([*role, 'viewer', json.dumps(spec), str(tmp / 'viewer.json')], env)
        if not viewer.wait_line('ready', 60.0):
            raise LiveRunError(f'the viewer did not start:\n{viewer.output()}')
        navigation = _Child(
            [*role, 'navigation', json.dumps(spec), str(tmp / 'navigation.json')], env
        )
        if not navigation.wait_line('ready', 60.0):
            raise LiveRunError(f'the navigation subscriber did not start:\n{navigation.output()}')
        log(
            f'live: {warmup_frames} + {frames} frames of {width}x{height} at {rate_hz:g} Hz '
            f'(~{(warmup_frames + frames) / rate_hz:.0f} s) ...'
        )
        camera = _Child([*role, 'camera', json.dumps(spec), str(tmp / 'camera.json')], env)
        if not camera.wait_line('measure-start', 120.0):
            raise LiveRunError(f'the camera did not start streaming:\n{camera.output()}')
        roles = {'node': node, 'camera': camera, 'viewer': viewer, 'navigation': navigation}
        cpu_before, wall_start = _cpu_of(roles), time.monotonic()
        if not camera.wait_line('measure-end', frames / rate_hz * 3 + 60.0):
            raise LiveRunError(f'the camera did not finish:\n{camera.output()}')
        cpu_after, wall_end = _cpu_of(roles), time.monotonic()
        cpu_start, cpu_end = cpu_before['node'], cpu_after['node']
        try:
            camera.process.wait(30.0)
        except subprocess.TimeoutExpired:
            raise LiveRunError(f'the camera did not exit:\n{camera.output()}') from None
        time.sleep(1.0)
        viewer.stop()
        navigation.stop()
        node_status = node.stop()
        seen = _read_result(tmp / 'viewer.json', viewer)
        navigated = _read_result(tmp / 'navigation.json', navigation)
        sent = _read_result(tmp / 'camera.json', camera)['sent']
    finally:
        for child in (camera, viewer, navigation, node):
            if child is not None:
                child.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    stamps = [f'{sec}.{nanosec:09d}' for sec, nanosec in sent]
    arrivals = seen['arrivals']
    depth = arrivals[DEPTH_TOPIC]
    latencies_ms = [(depth[s] - float(s)) * 1e3 for s in stamps if s in depth]
    with_depth = sum(s in depth for s in stamps)
    complete = sum(s in depth and s in arrivals[DEPTH_INFO_TOPIC] for s in stamps)
    clouds_reliable = sum(s in arrivals[POINTS_TOPIC] for s in stamps)
    clouds_navigation = sum(s in navigated['arrivals'] for s in stamps)
    values = seen['diagnostics'].get('values', {})
    stages = _stage_means(values)
    publish_ms = stages.pop('publish', None)
    stages.pop('total', None)
    node_cpu_ms = (cpu_end - cpu_start) * 1e3 / max(with_depth, 1)
    nbytes = output_bytes_per_frame(width, height, navigated['cloud'].get('bytes'))
    return {
        'model_path': str(model_path),
        'backend': backend,
        'precision': precision,
        'cpu_spin_wait': spin_wait,
        'node_params': dict(node_params or {}),
        'fastdds_profile': env.get('FASTRTPS_DEFAULT_PROFILES_FILE', ''),
        'width': width,
        'height': height,
        'rate_hz': rate_hz,
        'frames_sent': len(stamps),
        'frames_with_depth': with_depth,
        'frames_with_depth_and_info': complete,
        'frames_per_output': {t: sum(s in arrivals[t] for s in stamps) for t in OUTPUT_TOPICS},
        'delivered_ratio': with_depth / max(len(stamps), 1),
        'complete_ratio': complete / max(len(stamps), 1),
        'delivered_hz': with_depth / max(wall_end - wall_start, 1e-9),
        'latency_ms': {
            'median': _percentile(latencies_ms, 50),
            'p90': _percentile(latencies_ms, 90),
            'max': max(latencies_ms) if latencies_ms else None,
        },
        'node_cpu_ms_per_frame': node_cpu_ms,
        # Every process's CPU over the streaming window per frame sent: what the camera,
        # the viewer and the navigation subscriber leave the node of the cores' time.
        'cpu_ms_per_frame_sent': {
            role: (cpu_after[role] - cpu_before[role]) * 1e3 / max(len(stamps), 1)
            for role in cpu_before
        },
        'cores_ms_per_frame_sent': len(os.sched_getaffinity(0)) * 1e3 / rate_hz,
        'pipeline_cpu_ms': alone['cpu_ms'],
        'pipeline_wall_ms': alone['wall_ms'],
        'cpu_beyond_pipeline_ms': node_cpu_ms - alone['cpu_ms'],
        'node_stage_ms': stages,
        'node_publish_ms': publish_ms,
        'output_mb_per_frame': nbytes / 1e6,
        'copy_floor_ms': measure.copy_ms(nbytes)['median_ms'],
        'idle_core_percent': 100.0 * idle_core_share,
        'navigation': {
            'clouds_reliable': clouds_reliable,
            'clouds_sensor_data_qos': clouds_navigation,
            'ratio': clouds_navigation / max(clouds_reliable, 1),
            'cloud_points': navigated['cloud'].get('points'),
            'cloud_kib': navigated['cloud'].get('bytes', 0) / 1024,
        },
        'node_exit_status': node_status,
        'node_diagnostics': values,
    }


if __name__ == '__main__':
    sys.exit(main())
