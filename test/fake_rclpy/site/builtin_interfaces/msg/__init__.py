"""builtin_interfaces/msg: Time, Duration."""

from _fake_rosidl import message

Time = message('builtin_interfaces/msg/Time', {'sec': 'int32', 'nanosec': 'uint32'})
Duration = message('builtin_interfaces/msg/Duration', {'sec': 'int32', 'nanosec': 'uint32'})
