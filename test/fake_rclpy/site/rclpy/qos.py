"""rclpy.qos: QoSProfile and the policy enums the node uses (values as in rmw)."""

from enum import IntEnum


class HistoryPolicy(IntEnum):
    SYSTEM_DEFAULT = 0
    KEEP_LAST = 1
    KEEP_ALL = 2
    UNKNOWN = 3


class ReliabilityPolicy(IntEnum):
    SYSTEM_DEFAULT = 0
    RELIABLE = 1
    BEST_EFFORT = 2
    UNKNOWN = 3


class DurabilityPolicy(IntEnum):
    SYSTEM_DEFAULT = 0
    TRANSIENT_LOCAL = 1
    VOLATILE = 2
    UNKNOWN = 3


class QoSProfile:
    """A subset of rclpy.qos.QoSProfile: history/depth/reliability/durability."""

    __slots__ = ('_history', '_depth', '_reliability', '_durability')

    def __init__(self, **kwargs):
        allowed = {'history', 'depth', 'reliability', 'durability'}
        unknown = (
            set(kwargs)
            - allowed
            - {
                'lifespan',
                'deadline',
                'liveliness',
                'liveliness_lease_duration',
                'avoid_ros_namespace_conventions',
            }
        )
        if unknown:
            raise TypeError(f'Invalid arguments passed to constructor: {sorted(unknown)}')
        if 'history' not in kwargs:
            if 'depth' not in kwargs:
                raise TypeError('A QoSProfile must be given a depth or a history')
            kwargs['history'] = HistoryPolicy.KEEP_LAST
        if kwargs['history'] == HistoryPolicy.KEEP_LAST and 'depth' not in kwargs:
            raise TypeError('A QoSProfile with KEEP_LAST history must be given a depth')
        self._history = HistoryPolicy(kwargs['history'])
        self._depth = int(kwargs.get('depth', 0))
        self._reliability = ReliabilityPolicy(
            kwargs.get('reliability', ReliabilityPolicy.RELIABLE)
        )
        self._durability = DurabilityPolicy(kwargs.get('durability', DurabilityPolicy.VOLATILE))

    @property
    def history(self):
        return self._history

    @property
    def depth(self):
        return self._depth

    @property
    def reliability(self):
        return self._reliability

    @property
    def durability(self):
        return self._durability

    def __eq__(self, other):
        return isinstance(other, QoSProfile) and all(
            getattr(self, s) == getattr(other, s) for s in self.__slots__
        )

    def __repr__(self):
        return (
            f'QoSProfile(history={self.history.name}, depth={self.depth}, '
            f'reliability={self.reliability.name}, durability={self.durability.name})'
        )


qos_profile_sensor_data = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=5,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
qos_profile_system_default = QoSProfile(
    history=HistoryPolicy.SYSTEM_DEFAULT, reliability=ReliabilityPolicy.SYSTEM_DEFAULT
)
