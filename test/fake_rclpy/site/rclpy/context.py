"""rclpy.context.Context: ok() follows rclpy.init / rclpy.shutdown (one default context)."""

import rclpy


class Context:
    """The default context: shut down by rclpy.shutdown() or rclpy's signal handler."""

    def ok(self):
        return rclpy._state['ok']

    def try_shutdown(self):
        rclpy._state['ok'] = False


DEFAULT_CONTEXT = Context()
