"""Import-only stand-in for ROS 2's composition_interfaces, which has no PyPI wheel.

Jazzy's launch_ros.actions imports ``composition_interfaces.srv`` for composable nodes
(``load_composable_nodes.py`` names ``LoadNode.Request`` in its signatures). The launch tests
start no composable node, so the names are all launch_ros needs; ``LoadNode`` refuses to be
used. Only put on sys.path by ``launch_sources.use_launch_sources`` where the real package is
missing.
"""
