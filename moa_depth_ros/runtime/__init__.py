"""The robot's runtime: the ROS 2 node, its latest-frame worker, diagnostics and parameters.

``node`` is the rclpy node (``depth_node``); ``worker`` runs each frame off the executor
thread; ``diagnostics`` keeps the rates and latencies /diagnostics reports; ``params``
declares every setting once; ``memory`` keeps per-frame buffers in the process.
"""
