"""rclpy.parameter.Parameter: name, Parameter.Type, value (typed from the value)."""

from enum import Enum


class Parameter:
    """A named, typed parameter value."""

    class Type(Enum):
        NOT_SET = 0
        BOOL = 1
        INTEGER = 2
        DOUBLE = 3
        STRING = 4
        BYTE_ARRAY = 5
        BOOL_ARRAY = 6
        INTEGER_ARRAY = 7
        DOUBLE_ARRAY = 8
        STRING_ARRAY = 9

        @classmethod
        def from_parameter_value(cls, parameter_value):
            if parameter_value is None:
                return cls.NOT_SET
            if isinstance(parameter_value, bool):
                return cls.BOOL
            if isinstance(parameter_value, int):
                return cls.INTEGER
            if isinstance(parameter_value, float):
                return cls.DOUBLE
            if isinstance(parameter_value, str):
                return cls.STRING
            raise TypeError(
                f"The given value is not one of the allowed types '{parameter_value}'."
            )

        def check(self, parameter_value):
            return self == Parameter.Type.from_parameter_value(parameter_value)

    def __init__(self, name, type_=None, value=None):
        if type_ is None:
            type_ = Parameter.Type.from_parameter_value(value)
        if not isinstance(type_, Parameter.Type):
            raise TypeError("type must be an instance of '{}'".format(repr(Parameter.Type)))
        if not type_.check(value):
            raise ValueError(f"Type '{type_}' and value '{value}' do not agree")
        self._name = name
        self._type_ = type_
        self._value = value

    @property
    def name(self):
        return self._name

    @property
    def type_(self):
        return self._type_

    @property
    def value(self):
        return self._value

    def __repr__(self):
        return f'Parameter({self._name!r}, {self._type_}, {self._value!r})'
