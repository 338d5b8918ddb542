"""rcl_interfaces/msg: SetParametersResult, ParameterDescriptor, ranges, ParameterType."""

from _fake_rosidl import message

SetParametersResult = message(
    'rcl_interfaces/msg/SetParametersResult', {'successful': 'boolean', 'reason': 'string'}
)
FloatingPointRange = message(
    'rcl_interfaces/msg/FloatingPointRange',
    {'from_value': 'double', 'to_value': 'double', 'step': 'double'},
)
IntegerRange = message(
    'rcl_interfaces/msg/IntegerRange',
    {'from_value': 'int64', 'to_value': 'int64', 'step': 'uint64'},
)
ParameterDescriptor = message(
    'rcl_interfaces/msg/ParameterDescriptor',
    {
        'name': 'string',
        'type': 'uint8',
        'description': 'string',
        'additional_constraints': 'string',
        'read_only': 'boolean',
        'dynamic_typing': 'boolean',
        'floating_point_range': 'sequence<rcl_interfaces/FloatingPointRange>',
        'integer_range': 'sequence<rcl_interfaces/IntegerRange>',
    },
)
ParameterType = message(
    'rcl_interfaces/msg/ParameterType',
    {},
    constants={
        'PARAMETER_NOT_SET': 0,
        'PARAMETER_BOOL': 1,
        'PARAMETER_INTEGER': 2,
        'PARAMETER_DOUBLE': 3,
        'PARAMETER_STRING': 4,
        'PARAMETER_BYTE_ARRAY': 5,
        'PARAMETER_BOOL_ARRAY': 6,
        'PARAMETER_INTEGER_ARRAY': 7,
        'PARAMETER_DOUBLE_ARRAY': 8,
        'PARAMETER_STRING_ARRAY': 9,
    },
)
