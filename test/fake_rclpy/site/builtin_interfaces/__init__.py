"""Stand-in of the builtin_interfaces message package (see _fake_rosidl)."""
