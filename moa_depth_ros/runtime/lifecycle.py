"""``managed_depth_node``: the depth node as a ROS 2 managed (lifecycle) node.

The same code path as ``depth_node`` (``node.DepthNodeBase``), with its steps on the standard
transitions (design.ros2.org/articles/node_lifecycle.html), driven through the node's
``lifecycle_msgs`` services (``~/change_state``, ``~/get_state``, ...):

- configure: load the engine and build the pipeline. A failure (no such model file, a depth
  range the model cannot give, ...) returns FAILURE: the node stays unconfigured and its log
  (/rosout) says why at ERROR.
- activate: create the publishers, subscriptions, timers and the inference thread; outputs
  and /diagnostics exist only from here.
- deactivate: stop and destroy all of them; the engine stays loaded, so activate is quick.
- cleanup: release the engine. shutdown and error processing release whatever exists.

Parameters are declared at construction and may be set in every state (checked against the
model once one is loaded).

Nav2's lifecycle_manager (nav2_lifecycle_manager/src/lifecycle_manager.cpp) also expects a
bond (bondcpp, topic ``bond``, id = node name) after activate unless its ``bond_timeout`` is
0.0: see the README's lifecycle section.
"""

from __future__ import annotations

from typing import Any

from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from moa_depth_ros.errors import MoaDepthError
from moa_depth_ros.runtime.node import NODE_NAME, DepthNodeBase, run


class ManagedDepthNode(DepthNodeBase, LifecycleNode):
    """The depth node with configure / activate / deactivate / cleanup as transitions."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        try:
            self._init_depth_node()
        except BaseException:
            self.destroy_node()
            raise

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except (MoaDepthError, ParameterException) as e:
            self.get_logger().error(f'configure failed, staying unconfigured: {e}')
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f'configured: {self._engine.describe()}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self.get_logger().info('deactivated: no subscriptions, no outputs; the engine stays')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        self.get_logger().info('cleaned up: the engine is released')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # A transition callback raised: release everything; SUCCESS returns to unconfigured.
        self._release()
        return TransitionCallbackReturn.SUCCESS


def main(args: list[str] | None = None) -> int:
    """Console script ``managed_depth_node``: starts unconfigured, waits for transitions."""
    return run(ManagedDepthNode, args)
