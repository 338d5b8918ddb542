"""``make bench``: the numbers a user picks a depth node by, measured on this machine.

- ``floors``: what the machine can do at best, measured in the same run (numpy copy
  bandwidth, torch matmul rate in FP32 and BF16) and the models' FLOPs, so every time can
  be printed next to its floor.
- ``frame_stages``: each per-frame stage without the network against the memory floor.
- ``e2e``: a 640x480 camera frame through the whole pipeline (decode, preprocess, network,
  postprocess, cloud, serialize) per model preset and backend, each measurement in its own
  process so its peak RSS is its own.
- ``load``: the node's latest-frame worker fed by a 60 Hz producer with a slower network,
  no ROS: delivered rate, drops, capture-to-publish latency and whether memory stays flat.
- ``engines``: the network alone per backend and precision, with parity against FP32.
- ``peers``: networks we are compared with (Depth-Anything-V2-Small's architecture, random
  weights), measured by ``e2e`` beside our models; ``export-peer`` writes one for
  ``moa-depth bench MODEL --peer FILE`` on a robot.
- ``training``: training throughput per recipe.
- ``report``: the results as JSON and Markdown, and the README's performance section.
- ``suite``: ``python -m tools.bench all``, all of the above.

Timing, the camera frame, memory and the machine description come from the installed
package (``moa_depth_ros.bench.measure``), as does the live ROS 2 section
(``moa_depth_ros.bench.live``): what a robot runs with ``moa-depth bench MODEL`` is measured
the same way here.
"""
