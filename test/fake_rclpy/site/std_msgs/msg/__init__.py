"""std_msgs/msg: Header."""

from _fake_rosidl import message
import builtin_interfaces.msg  # noqa: F401  registers builtin_interfaces/Time

Header = message('std_msgs/msg/Header', {'stamp': 'builtin_interfaces/Time', 'frame_id': 'string'})
