"""Stand-in of the diagnostic_msgs message package (see _fake_rosidl)."""
