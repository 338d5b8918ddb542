"""rclpy.executors: ExternalShutdownException and executors whose spin runs a test script.

A real executor blocks until the context shuts down (Ctrl-C). Here ``spin`` calls
``SPIN_HOOK(nodes)`` (set by a test) which drives callbacks and then ends the spin the way
the real world does: raising KeyboardInterrupt (Ctrl-C before rclpy's handler, Humble),
ExternalShutdownException (context shut down by the signal handler), or returning.
"""

import rclpy


class ExternalShutdownException(Exception):
    """The context was shut down while spinning."""


def _ctrl_c(nodes):
    raise KeyboardInterrupt


SPIN_HOOK = _ctrl_c


class Executor:
    def __init__(self, *, context=None):
        self._nodes = []
        self._is_shutdown = False

    def add_node(self, node):
        if node not in self._nodes:
            self._nodes.append(node)
            return True
        return False

    def remove_node(self, node):
        if node in self._nodes:
            self._nodes.remove(node)

    def get_nodes(self):
        return list(self._nodes)

    def spin(self):
        if not rclpy.ok():
            raise ExternalShutdownException()
        SPIN_HOOK(list(self._nodes))

    def spin_once(self, timeout_sec=None):
        if not rclpy.ok():
            raise ExternalShutdownException()

    def shutdown(self, timeout_sec=None):
        self._is_shutdown = True
        return True


class SingleThreadedExecutor(Executor):
    pass


class MultiThreadedExecutor(Executor):
    def __init__(self, num_threads=None, *, context=None):
        super().__init__(context=context)
