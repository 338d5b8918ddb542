"""diagnostic_msgs/msg: DiagnosticArray, DiagnosticStatus, KeyValue.

``DiagnosticStatus.level`` is a ``byte`` field: rosidl Python holds it as ``bytes`` of
length 1, and the OK/WARN/ERROR/STALE constants are ``bytes`` too.
"""

from _fake_rosidl import message
import std_msgs.msg  # noqa: F401  registers std_msgs/Header

KeyValue = message('diagnostic_msgs/msg/KeyValue', {'key': 'string', 'value': 'string'})
DiagnosticStatus = message(
    'diagnostic_msgs/msg/DiagnosticStatus',
    {
        'level': 'octet',
        'name': 'string',
        'message': 'string',
        'hardware_id': 'string',
        'values': 'sequence<diagnostic_msgs/KeyValue>',
    },
    constants={'OK': b'\x00', 'WARN': b'\x01', 'ERROR': b'\x02', 'STALE': b'\x03'},
)
DiagnosticArray = message(
    'diagnostic_msgs/msg/DiagnosticArray',
    {'header': 'std_msgs/Header', 'status': 'sequence<diagnostic_msgs/DiagnosticStatus>'},
)
