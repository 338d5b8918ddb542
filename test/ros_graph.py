"""Real ROS 2 in the tests: rclpy contexts on private domains, a probe node, node processes.

Nothing here stands in for ROS. ``RosGraph`` owns an rclpy ``Context`` initialised on the
test's own domain id (``ros_domain`` in conftest) and an executor spinning it in a thread.
``Probe`` is the test's node: it plays the camera driver (publishers), RViz and
depth_image_proc (subscribers of any reliability) and rqt_console (/rosout). ``NodeProcess``
runs the installed ``depth_node`` console script as a process of its own, the way
``ros2 run`` does. Messages cross real Fast DDS, inside the private network namespace that
``make test`` provides (conftest refuses a domain anywhere else).
"""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import numpy as np

from moa_depth_ros.frame import msgs

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / 'config' / 'moa_depth.yaml'
# rcl_interfaces/msg/Log levels
DEBUG, INFO, WARN, ERROR, FATAL = 10, 20, 30, 40, 50


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0, period_s: float = 0.01):
    """Poll ``predicate`` until it returns something true; return that, or None on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(period_s)


class Inbox:
    """Messages received on one subscription, in arrival order (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self.subscription: Any = None

    def append(self, msg: Any) -> None:
        with self._lock:
            self._items.append(msg)

    @property
    def messages(self) -> list[Any]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def wait(self, count: int = 1, timeout_s: float = 10.0) -> list[Any]:
        """Wait until ``count`` messages arrived; return them (fewer on timeout)."""
        wait_for(lambda: len(self) >= count, timeout_s)
        return self.messages

    def wait_match(self, predicate: Callable[[Any], bool], timeout_s: float = 10.0) -> Any:
        """Wait for a message satisfying ``predicate``; return it, or None on timeout."""
        return wait_for(lambda: next((m for m in self.messages if predicate(m)), None), timeout_s)


class RosGraph:
    """One rclpy context on a private ROS domain, spun by a background executor."""

    def __init__(self, domain_id: int) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.domain_id = domain_id
        self.context = Context()
        # A context other than the default one installs no signal handlers.
        rclpy.init(context=self.context, domain_id=domain_id)
        # Single-threaded, as `rclpy.spin` runs the node. (A MultiThreadedExecutor can build
        # its wait set from an event handler another of its threads is destroying: rclpy
        # raises InvalidHandle there and the executor thread dies.)
        self.executor = SingleThreadedExecutor(context=self.context)
        self._nodes: list[Any] = []
        self._thread = threading.Thread(target=self._spin, name='test_executor', daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def add(self, node: Any) -> Any:
        """Spin ``node`` from now on (destroyed at ``close``); returns it."""
        self._nodes.append(node)
        self.executor.add_node(node)
        return node

    def probe(self, name: str = 'probe') -> Probe:
        """Add a new ``Probe`` node to this graph."""
        return self.add(Probe(self.context, name))

    def destroy(self, node: Any) -> None:
        """Stop spinning ``node`` and destroy it now."""
        self.executor.remove_node(node)
        self._nodes.remove(node)
        node.destroy_node()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=5.0)
        for node in reversed(self._nodes):
            node.destroy_node()
        self._nodes.clear()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(5.0)


def _qos(reliable: bool, depth: int, transient_local: bool = False) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL
        if transient_local
        else DurabilityPolicy.VOLATILE,
    )


def _probe_class():
    from rclpy.node import Node

    class _Probe(Node):
        """The test's own node: camera driver, output consumers and log reader in one."""

        def __init__(self, context: Any, name: str) -> None:
            super().__init__(name, context=context)
            self._publishers_by_key: dict[tuple, Any] = {}
            self.logs = self.subscribe_log()

        def publisher(self, msg_type: Any, topic: str, *, reliable: bool = True, depth: int = 10):
            """Return the publisher of this type, topic and QoS (created on first use)."""
            key = (msg_type, topic, reliable, depth)
            if key not in self._publishers_by_key:
                self._publishers_by_key[key] = self.create_publisher(
                    msg_type, topic, _qos(reliable, depth)
                )
            return self._publishers_by_key[key]

        def subscribe(
            self, msg_type: Any, topic: str, *, reliable: bool = True, depth: int = 10
        ) -> Inbox:
            """Collect every message of ``topic`` in an ``Inbox``."""
            inbox = Inbox()
            inbox.subscription = self.create_subscription(
                msg_type, topic, inbox.append, _qos(reliable, depth)
            )
            return inbox

        def subscribe_log(self) -> Inbox:
            """/rosout, as rqt_console reads it (reliable, transient local: start-up too)."""
            from rcl_interfaces.msg import Log

            inbox = Inbox()
            inbox.subscription = self.create_subscription(
                Log, '/rosout', inbox.append, _qos(True, 1000, transient_local=True)
            )
            return inbox

        def log_lines(self, level: int | None = None, node: str | None = None) -> list[str]:
            """Text of the /rosout lines received (of one level and node name, if given)."""
            return [
                m.msg
                for m in self.logs.messages
                if (level is None or m.level == level) and (node is None or m.name.endswith(node))
            ]

        def wait_log(self, text: str, level: int | None = None, timeout_s: float = 10.0) -> str:
            """Wait for a /rosout line containing ``text``; return it (None on timeout)."""
            return wait_for(
                lambda: next((m for m in self.log_lines(level) if text in m), None), timeout_s
            )

        def send(self, topic: str, msg: Any, *, reliable: bool = True, subscribers: int = 1):
            """Publish once a subscriber is matched (volatile QoS keeps nothing for later)."""
            pub = self.publisher(type(msg), topic, reliable=reliable)
            if not wait_for(lambda: pub.get_subscription_count() >= subscribers, 15.0):
                raise TimeoutError(f'no subscriber on {topic} after 15 s')
            pub.publish(msg)

        def subscriber_reliabilities(self, topic: str, node_name: str) -> list[str]:
            """Reliability of each of ``node_name``'s subscriptions to ``topic`` (graph query)."""
            from rclpy.qos import ReliabilityPolicy

            return sorted(
                'reliable'
                if info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                else 'best_effort'
                for info in self.get_subscriptions_info_by_topic(topic)
                if info.node_name == node_name
            )

    return _Probe


def Probe(context: Any, name: str = 'probe') -> Any:  # noqa: N802 - reads like the class
    """Create a probe node in ``context`` (the class needs rclpy, imported on first use)."""
    return _probe_class()(context, name)


# -- messages ---------------------------------------------------------------------------------


def header(sec: int = 12, nanosec: int = 345, frame_id: str = 'camera_optical_frame') -> Any:
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def image_msg(rgb: np.ndarray, **header_kwargs: Any) -> Any:
    """Build an rgb8 sensor_msgs/Image of ``rgb`` (uint8 [H, W, 3])."""
    from sensor_msgs.msg import Image

    return msgs.fill_image_msg(Image(header=header(**header_kwargs)), msgs.encode_rgb(rgb))


def grey_image_msg(width: int, height: int, grey: int = 128, **header_kwargs: Any) -> Any:
    """Build a uniform rgb8 image (the tiny test model maps its grey level to a depth)."""
    return image_msg(np.full((height, width, 3), grey, dtype=np.uint8), **header_kwargs)


def camera_info_msg(
    width: int,
    height: int,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    d: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0),
    **header_kwargs: Any,
) -> Any:
    """Build a plumb_bob sensor_msgs/CameraInfo."""
    from sensor_msgs.msg import CameraInfo

    return CameraInfo(
        header=header(**header_kwargs),
        width=width,
        height=height,
        distortion_model='plumb_bob',
        d=list(d),
        k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
    )


def diagnostic_values(array: Any) -> tuple[int, str, dict[str, str]]:
    """(level, message, key -> value) of the first status of a DiagnosticArray."""
    status = array.status[0]
    return (
        int.from_bytes(status.level, 'little')
        if isinstance(status.level, bytes)
        else int(status.level),
        status.message,
        {kv.key: kv.value for kv in status.values},
    )


# -- the node as its own process --------------------------------------------------------------


def console_script(name: str = 'depth_node') -> Path | None:
    """Find the installed console script beside this interpreter (None: not installed)."""
    path = Path(sys.executable).parent / name
    return path if path.is_file() else None


class NodeProcess:
    """``depth_node`` (or ``managed_depth_node``) as a process; ``--ros-args``; logs to a file."""

    def __init__(
        self,
        args: list[str],
        domain_id: int,
        log_path: Path,
        env: dict | None = None,
        executable: str = 'depth_node',
    ):
        script = console_script(executable)
        if script is None:
            raise FileNotFoundError(
                f'{executable} is not installed beside {sys.executable} (pip install -e .)'
            )
        environ = dict(os.environ)
        environ.update(
            ROS_DOMAIN_ID=str(domain_id),
            # Discovery stays on this host: Jazzy and later read the first, Humble the second.
            ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
            ROS_LOCALHOST_ONLY='1',
            PYTHONUNBUFFERED='1',
            RCUTILS_COLORIZED_OUTPUT='0',
            RCUTILS_LOGGING_BUFFERED_STREAM='0',
        )
        environ.update(env or {})
        self.log_path = log_path
        self._log = open(log_path, 'wb')
        self.started_s = time.monotonic()
        self.process = subprocess.Popen(
            [str(script), *args], stdout=self._log, stderr=subprocess.STDOUT, env=environ
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def send_signal(self, sig: int = signal.SIGINT) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        """Exit status; raises subprocess.TimeoutExpired if still running after timeout."""
        return self.process.wait(timeout_s)

    def stop(self) -> None:
        """End the process however it can be ended (test teardown)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5.0)
        self._log.close()
