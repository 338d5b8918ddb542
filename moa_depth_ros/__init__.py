"""Metric depth and point clouds from one monocular camera for ROS 2.

The package is layered (see README, "Architecture"): ``model`` (PyTorch networks),
``engine`` (inference backends), ``geometry``/``msgs``/``pipeline`` (ROS-agnostic frame
processing), ``bag`` (offline rosbag2 processing) and ``node`` (the only rclpy module).
"""

__version__ = '0.1.0'
