"""rclpy.time.Time: nanoseconds and to_msg()."""


class Time:
    def __init__(self, *, seconds=0, nanoseconds=0, clock_type=None):
        self._nanoseconds = int(seconds * 1e9) + int(nanoseconds)

    @property
    def nanoseconds(self):
        return self._nanoseconds

    def to_msg(self):
        from builtin_interfaces.msg import Time as TimeMsg

        sec, nanosec = divmod(self._nanoseconds, 10**9)
        return TimeMsg(sec=sec, nanosec=nanosec)
