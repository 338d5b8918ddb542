"""Stand-in of the rcl_interfaces message package (see _fake_rosidl)."""
