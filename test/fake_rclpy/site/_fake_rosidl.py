"""Message classes that behave like rosidl_generator_py's generated Python messages.

Written from the generator template (rosidl_generator_py/resource/_msg.py.em), keeping the
behaviour node code can trip over: ``__slots__`` (no new attributes), keyword-only
construction with unknown keywords rejected, field setters that check types the way the
generated code does (an ``int`` field refuses ``numpy.int64``, a ``double`` field refuses an
``int``, ``uint8[]`` takes ``array.array('B')`` as is and converts other sequences but
refuses a numpy array, ``double[9]`` is a float64 numpy array), ``get_fields_and_field_types``
and value equality. Violations raise AssertionError, as the generated asserts do.
"""

from __future__ import annotations

import array
from collections import UserList, UserString
from collections.abc import Sequence, Set
import math
import re

import numpy

_INT_BOUNDS = {
    'int8': (-(2**7), 2**7),
    'uint8': (0, 2**8),
    'int16': (-(2**15), 2**15),
    'uint16': (0, 2**16),
    'int32': (-(2**31), 2**31),
    'uint32': (0, 2**32),
    'int64': (-(2**63), 2**63),
    'uint64': (0, 2**64),
}
# Sequences of these element types are array.array in rosidl Python; fixed arrays numpy.
_ARRAY_CODES = {'uint8': 'B', 'double': 'd', 'float': 'f', 'int32': 'i', 'uint32': 'I'}
_NUMPY_DTYPES = {'uint8': numpy.uint8, 'double': numpy.float64, 'float': numpy.float32}

_REGISTRY: dict[str, type] = {}


def _fail(name: str, what: str) -> None:
    raise AssertionError(f"The '{name}' field must be {what}")


def _is_sequence(value: object) -> bool:
    return isinstance(value, (Sequence, Set, UserList)) and not isinstance(
        value, (str, UserString)
    )


def _check_scalar(name: str, typ: str, value: object) -> object:
    if typ in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[typ]
        if not isinstance(value, int):
            _fail(name, "of type 'int'")
        if not lo <= value < hi:
            _fail(name, f'an integer in [{lo}, {hi - 1}]')
        return value
    if typ in ('double', 'float'):
        if not isinstance(value, float):
            _fail(name, "of type 'float'")
        if not (math.isinf(value) or -1.8e308 <= value <= 1.8e308 or math.isnan(value)):
            _fail(name, 'a finite float')
        return value
    if typ == 'boolean':
        if not isinstance(value, bool):
            _fail(name, "of type 'bool'")
        return value
    if typ == 'string':
        if not isinstance(value, str):
            _fail(name, "of type 'str'")
        return value
    if typ == 'octet':
        if not (isinstance(value, bytes) and len(value) == 1):
            _fail(name, "of type 'bytes' with length 1")
        return value
    cls = _REGISTRY[typ]
    if not isinstance(value, cls):
        _fail(name, f"a sub message of type '{cls.__name__}'")
    return value


def _check(name: str, typ: str, value: object) -> object:
    if typ.startswith('sequence<'):
        elem = typ[len('sequence<') : -1]
        code = _ARRAY_CODES.get(elem)
        if code is not None and isinstance(value, array.array):
            if value.typecode != code:
                _fail(name, f"an array.array with type code '{code}'")
            return value
        if not _is_sequence(value):
            _fail(name, f'a sequence of {elem}')
        items = [_check_scalar(name, elem, v) for v in value]
        return array.array(code, items) if code is not None else list(items)
    if typ.endswith(']'):
        elem, size = typ[:-1].split('[')
        dtype = _NUMPY_DTYPES[elem]
        if isinstance(value, numpy.ndarray):
            if value.dtype != dtype or value.size != int(size):
                _fail(name, f'a numpy array of {dtype.__name__} with {size} elements')
            return value
        if not _is_sequence(value) or len(value) != int(size):
            _fail(name, f'a sequence of {size} {elem} values')
        return numpy.array([_check_scalar(name, elem, v) for v in value], dtype=dtype)
    return _check_scalar(name, typ, value)


def _default(typ: str) -> object:
    if typ.startswith('sequence<'):
        code = _ARRAY_CODES.get(typ[len('sequence<') : -1])
        return array.array(code) if code is not None else []
    if typ.endswith(']'):
        elem, size = typ[:-1].split('[')
        return numpy.zeros(int(size), dtype=_NUMPY_DTYPES[elem])
    if typ in _INT_BOUNDS:
        return 0
    scalars = {'double': 0.0, 'float': 0.0, 'boolean': False, 'string': '', 'octet': b'\x00'}
    return scalars[typ] if typ in scalars else _REGISTRY[typ]()


def _field_property(name: str, typ: str) -> property:
    slot = '_' + name

    def getter(self):
        return getattr(self, slot)

    def setter(self, value):
        setattr(self, slot, _check(name, typ, value))

    return property(getter, setter, doc=f"Message field '{name}'.")


def _snake(name: str) -> str:
    return re.sub(r'(?<!^)(?=[A-Z])', '_', name).lower()


def message(typename: str, fields: dict[str, str], constants: dict[str, object] | None = None):
    """Build a message class ``typename`` ('pkg/msg/Name') with rosidl field types."""
    pkg, _, short = typename.split('/')

    def __init__(self, **kwargs):
        unknown = [k for k in kwargs if k not in fields]
        if unknown:
            raise AssertionError(
                'Invalid arguments passed to constructor: ' + ', '.join(sorted(unknown))
            )
        for field, typ in fields.items():
            value = kwargs[field] if field in kwargs else _default(typ)
            setattr(self, field, value)

    def __eq__(self, other):
        if not isinstance(other, self.__class__):
            return False
        for field, typ in fields.items():
            a, b = getattr(self, field), getattr(other, field)
            if typ.endswith(']'):
                if not numpy.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    def __repr__(self):
        args = ', '.join(f'{f}={getattr(self, f)!r}' for f in fields)
        return f'{pkg}.msg.{short}({args})'

    @classmethod
    def get_fields_and_field_types(cls):
        return dict(cls._fields_and_field_types)

    namespace = {
        '__slots__': ['_' + f for f in fields],
        '__init__': __init__,
        '__eq__': __eq__,
        '__hash__': None,
        '__repr__': __repr__,
        # rosidl puts each class in its own module, e.g. sensor_msgs.msg._point_cloud2.
        '__module__': f'{pkg}.msg._{_snake(short)}',
        '_fields_and_field_types': dict(fields),
        'get_fields_and_field_types': get_fields_and_field_types,
    }
    namespace.update(constants or {})
    for field, typ in fields.items():
        namespace[field] = _field_property(field, typ)
    cls = type(short, (), namespace)
    _REGISTRY[f'{pkg}/{short}'] = cls
    return cls
