"""Exceptions of rclpy.exceptions that the node can meet (same names and meanings)."""


class NotInitializedException(Exception):
    """rclpy.init() was not called (or shutdown already)."""

    def __init__(self, *args):
        super().__init__('rclpy.init() has not been called', *args)


class ParameterException(Exception):
    """Base of the parameter errors."""


class ParameterNotDeclaredException(ParameterException):
    """A parameter is used before being declared."""


class ParameterAlreadyDeclaredException(ParameterException):
    """A parameter is declared twice."""


class InvalidParameterTypeException(ParameterException):
    """An override's type does not match the declared type."""

    def __init__(self, parameter, expected_type):
        super().__init__(
            f"Trying to set parameter '{parameter.name}' to '{parameter.value}' of type "
            f"'{parameter.type_.name}', expecting type '{expected_type}'"
        )


class InvalidParameterValueException(ParameterException):
    """An on-set callback rejected the declared value."""

    def __init__(self, parameter, value, reason):
        super().__init__(f'Invalid parameter value ({value}) for parameter. Reason: {reason}')
        self.parameter = parameter
        self.reason = reason
