"""sensor_msgs/msg: Image, CompressedImage, CameraInfo, RegionOfInterest, PointCloud2, PointField.

Field names, types and constants as in ros2/common_interfaces (identical in Humble and Jazzy).
"""

from _fake_rosidl import message
import std_msgs.msg  # noqa: F401  registers std_msgs/Header

Image = message(
    'sensor_msgs/msg/Image',
    {
        'header': 'std_msgs/Header',
        'height': 'uint32',
        'width': 'uint32',
        'encoding': 'string',
        'is_bigendian': 'uint8',
        'step': 'uint32',
        'data': 'sequence<uint8>',
    },
)
CompressedImage = message(
    'sensor_msgs/msg/CompressedImage',
    {'header': 'std_msgs/Header', 'format': 'string', 'data': 'sequence<uint8>'},
)
RegionOfInterest = message(
    'sensor_msgs/msg/RegionOfInterest',
    {
        'x_offset': 'uint32',
        'y_offset': 'uint32',
        'height': 'uint32',
        'width': 'uint32',
        'do_rectify': 'boolean',
    },
)
CameraInfo = message(
    'sensor_msgs/msg/CameraInfo',
    {
        'header': 'std_msgs/Header',
        'height': 'uint32',
        'width': 'uint32',
        'distortion_model': 'string',
        'd': 'sequence<double>',
        'k': 'double[9]',
        'r': 'double[9]',
        'p': 'double[12]',
        'binning_x': 'uint32',
        'binning_y': 'uint32',
        'roi': 'sensor_msgs/RegionOfInterest',
    },
)
PointField = message(
    'sensor_msgs/msg/PointField',
    {'name': 'string', 'offset': 'uint32', 'datatype': 'uint8', 'count': 'uint32'},
    constants={
        'INT8': 1,
        'UINT8': 2,
        'INT16': 3,
        'UINT16': 4,
        'INT32': 5,
        'UINT32': 6,
        'FLOAT32': 7,
        'FLOAT64': 8,
    },
)
PointCloud2 = message(
    'sensor_msgs/msg/PointCloud2',
    {
        'header': 'std_msgs/Header',
        'height': 'uint32',
        'width': 'uint32',
        'fields': 'sequence<sensor_msgs/PointField>',
        'is_bigendian': 'boolean',
        'point_step': 'uint32',
        'row_step': 'uint32',
        'data': 'sequence<uint8>',
        'is_dense': 'boolean',
    },
)
