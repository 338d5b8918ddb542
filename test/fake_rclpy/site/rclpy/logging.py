"""rclpy.logging: get_logger and RcutilsLogger with rclpy's logging filters.

Messages are recorded in ``RECORDS`` as (severity, logger name, message) for the tests.
Filters as in rclpy.impl.rcutils_logger: ``once``, ``skip_first``,
``throttle_duration_sec`` (per call site), unknown keyword arguments raise TypeError.
"""

import sys
import time

RECORDS = []
_SUPPORTED = {'once', 'skip_first', 'throttle_duration_sec', 'throttle_time_source_type', 'name'}


class RcutilsLogger:
    """A named logger; one filter state per call site, like rclpy's CallerId contexts."""

    def __init__(self, name=''):
        self.name = name
        self._contexts = {}

    def get_child(self, name):
        return RcutilsLogger(f'{self.name}.{name}' if self.name else name)

    def _log(self, severity, message, kwargs):
        unknown = set(kwargs) - _SUPPORTED
        if unknown:
            raise TypeError(
                f'parameter "{sorted(unknown)[0]}" is not one of the recognized logging options '
                f'"{sorted(_SUPPORTED)}"'
            )
        frame = sys._getframe(2)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        ctx = self._contexts.setdefault(caller, {'calls': 0, 'last': None})
        ctx['calls'] += 1
        if kwargs.get('once') and ctx['calls'] > 1:
            return False
        if kwargs.get('skip_first') and ctx['calls'] == 1:
            return False
        period = kwargs.get('throttle_duration_sec')
        if period:
            now = time.monotonic()
            if ctx['last'] is not None and now - ctx['last'] < period:
                return False
            ctx['last'] = now
        RECORDS.append((severity, self.name, str(message)))
        return True

    def debug(self, message, **kwargs):
        return self._log('DEBUG', message, kwargs)

    def info(self, message, **kwargs):
        return self._log('INFO', message, kwargs)

    def warning(self, message, **kwargs):
        return self._log('WARN', message, kwargs)

    def warn(self, message, **kwargs):
        return self._log('WARN', message, kwargs)

    def error(self, message, **kwargs):
        return self._log('ERROR', message, kwargs)

    def fatal(self, message, **kwargs):
        return self._log('FATAL', message, kwargs)


def get_logger(name):
    """Return a logger named ``name``."""
    return RcutilsLogger(name)
