"""``moa-depth bench``: the numbers a user picks a depth node by, measured on this machine.

- ``floors``: what the machine can do at best, measured in the same run (numpy copy
  bandwidth, torch matmul rate in FP32 and BF16) and the models' FLOPs, so every time can
  be printed next to its floor.
- ``e2e``: a 640x480 camera frame through the whole pipeline (decode, preprocess, network,
  postprocess, cloud, serialize) per model and backend, each measurement in its own
  process so its peak RSS is its own.
- ``load``: the node's latest-frame worker fed by a 60 Hz producer with a slower network,
  no ROS: delivered rate, drops, capture-to-publish latency and whether memory stays flat.
- ``report``: the results as JSON and Markdown, and the README's performance section.
- ``cli``: the command; ``python -m training bench`` adds training throughput on top.

Heavy dependencies (torch, onnxruntime) are imported inside functions, so importing this
package costs nothing.
"""
