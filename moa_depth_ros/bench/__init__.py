"""``moa-depth bench MODEL``: time an existing model file on the target, as the node runs it.

- ``measure``: the one timer, the synthetic camera frame, end-to-end frame timing, memory
  and the machine description (also used by the development benchmarks in ``tools/bench``);
- ``live``: depth_node on real ROS 2 with a camera and a viewer process (``--live``);
- ``command``: the command.

Heavy dependencies (onnxruntime, rclpy) are imported inside functions, so importing this
package costs nothing.
"""
