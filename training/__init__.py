"""Offline training package of moa_depth_ros: data, losses, metrics, train, eval, export.

Run from the repository root as ``python -m training <command>``. It imports
``moa_depth_ros.model``; the runtime package never imports it (setup.py does not install it).
"""
