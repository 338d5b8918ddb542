"""Stand-in of the std_msgs message package (see _fake_rosidl)."""
