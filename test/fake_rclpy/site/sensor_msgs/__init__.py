"""Stand-in of the sensor_msgs message package (see _fake_rosidl)."""
