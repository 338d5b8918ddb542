"""rclpy.clock.Clock (ROS time = system time here)."""

import time as _time

from rclpy.time import Time


class Clock:
    def now(self):
        return Time(nanoseconds=_time.time_ns())
