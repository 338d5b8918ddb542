"""rclpy.node.Node and the entities it creates, as far as moa_depth_ros.node uses them.

Parameter handling follows rclpy's Node: declaration infers the type from the default
(unless ``dynamic_typing``), takes overrides first, checks type and ranges of the
descriptor, runs the on-set callbacks and raises InvalidParameterValueException /
InvalidParameterTypeException on failure; ``set_parameters`` checks read-only, type and
range, then the on-set callbacks, and returns one SetParametersResult per parameter.

Stand-in-only introspection is named ``fake_*`` (published messages, destroyed state).
"""

import math

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

import rclpy
from rclpy.clock import Clock
from rclpy.context import DEFAULT_CONTEXT
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    NotInitializedException,
    ParameterAlreadyDeclaredException,
    ParameterNotDeclaredException,
)
from rclpy.logging import get_logger
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile


class RCLError(RuntimeError):
    """rclpy._rclpy_pybind11.RCLError: an rcl call failed."""


class _Destroyable:
    fake_destroyed = False

    def _check_alive(self):
        if self.fake_destroyed:
            raise RuntimeError(f'cannot use {type(self).__name__}: it was destroyed')

    def destroy(self):
        self.fake_destroyed = True


class Publisher(_Destroyable):
    def __init__(self, msg_type, topic, qos_profile):
        self.msg_type = msg_type
        self.topic = topic
        self.qos_profile = qos_profile
        self.fake_published = []

    @property
    def topic_name(self):
        return self.topic

    def publish(self, msg):
        self._check_alive()
        if not rclpy.ok():
            # rcl refuses to publish once the context is shut down (Ctrl-C, rclpy.shutdown).
            raise RCLError(
                "Failed to publish: publisher's context is invalid, at ./src/rcl/publisher.c"
            )
        if not isinstance(msg, self.msg_type):
            raise TypeError(f'Expected {self.msg_type}, got {type(msg)}')
        self.fake_published.append(msg)


class Subscription(_Destroyable):
    def __init__(self, msg_type, topic, callback, qos_profile):
        self.msg_type = msg_type
        self.topic = topic
        self.callback = callback
        self.qos_profile = qos_profile

    @property
    def topic_name(self):
        return self.topic


class Timer(_Destroyable):
    def __init__(self, callback, timer_period_ns):
        self.callback = callback
        self.timer_period_ns = timer_period_ns
        self._canceled = False

    def cancel(self):
        self._canceled = True

    def is_canceled(self):
        return self._canceled


def _qos(qos_or_depth):
    if isinstance(qos_or_depth, QoSProfile):
        return qos_or_depth
    if isinstance(qos_or_depth, int):
        return QoSProfile(depth=qos_or_depth)
    raise TypeError('Expected QoSProfile or int, but received {!r}'.format(type(qos_or_depth)))


class Node:
    """The subset of rclpy.node.Node used by the depth node."""

    PARAM_REL_TOL = 1e-6

    def __init__(
        self,
        node_name,
        *,
        context=None,
        cli_args=None,
        namespace=None,
        use_global_arguments=True,
        enable_rosout=True,
        start_parameter_services=True,
        parameter_overrides=None,
        allow_undeclared_parameters=False,
        automatically_declare_parameters_from_overrides=False,
        enable_logger_service=False,
    ):
        if not rclpy.ok():
            raise NotInitializedException('cannot create node')
        self._name = node_name
        self._namespace = namespace or '/'
        self._parameters = {}
        self._descriptors = {}
        self._on_set_parameters_callbacks = []
        self._parameter_overrides = {}
        if use_global_arguments:
            for name, value in rclpy._state['overrides'].items():
                self._parameter_overrides[name] = Parameter(name, value=value)
        for param in parameter_overrides or []:
            self._parameter_overrides[param.name] = param
        self._publishers = []
        self._subscriptions = []
        self._timers = []
        self._logger = get_logger(node_name)
        self._clock = Clock()
        self.fake_destroyed = False
        # rclpy's TimeSource declares use_sim_time on every node.
        self.declare_parameter('use_sim_time', False)

    # -- names, logging, clock --

    def get_name(self):
        return self._name

    def get_namespace(self):
        return self._namespace

    def get_logger(self):
        return self._logger

    def get_clock(self):
        return self._clock

    @property
    def context(self):
        return DEFAULT_CONTEXT

    def resolve_topic_name(self, topic, *, only_expand=False):
        if topic.startswith('/'):
            return topic
        if topic.startswith('~'):
            return f'{self._namespace.rstrip("/")}/{self._name}{topic[1:]}'
        return f'{self._namespace.rstrip("/")}/{topic}'

    # -- entities --

    @property
    def publishers(self):
        yield from self._publishers

    @property
    def subscriptions(self):
        yield from self._subscriptions

    @property
    def timers(self):
        yield from self._timers

    def create_publisher(
        self,
        msg_type,
        topic,
        qos_profile,
        *,
        callback_group=None,
        event_callbacks=None,
        qos_overriding_options=None,
        publisher_class=None,
    ):
        pub = Publisher(msg_type, self.resolve_topic_name(topic), _qos(qos_profile))
        self._publishers.append(pub)
        return pub

    def create_subscription(
        self,
        msg_type,
        topic,
        callback,
        qos_profile,
        *,
        callback_group=None,
        event_callbacks=None,
        qos_overriding_options=None,
        raw=False,
    ):
        sub = Subscription(msg_type, self.resolve_topic_name(topic), callback, _qos(qos_profile))
        self._subscriptions.append(sub)
        return sub

    def create_timer(self, timer_period_sec, callback, callback_group=None, clock=None):
        timer = Timer(callback, int(float(timer_period_sec) * 1e9))
        self._timers.append(timer)
        return timer

    def destroy_publisher(self, publisher):
        if publisher in self._publishers:
            self._publishers.remove(publisher)
            publisher.destroy()
            return True
        return False

    def destroy_subscription(self, subscription):
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            subscription.destroy()
            return True
        return False

    def destroy_timer(self, timer):
        if timer in self._timers:
            self._timers.remove(timer)
            timer.destroy()
            return True
        return False

    def destroy_node(self):
        for entity in self._publishers + self._subscriptions + self._timers:
            entity.destroy()
        self._publishers.clear()
        self._subscriptions.clear()
        self._timers.clear()
        self.fake_destroyed = True

    # -- parameters --

    def declare_parameter(self, name, value=None, descriptor=None, ignore_override=False):
        descriptor = ParameterDescriptor() if descriptor is None else descriptor
        return self.declare_parameters('', [(name, value, descriptor)], ignore_override)[0]

    def declare_parameters(self, namespace, parameters, ignore_override=False):
        declared = []
        for entry in parameters:
            name = f'{namespace}.{entry[0]}' if namespace else entry[0]
            value = entry[1] if len(entry) > 1 else None
            descriptor = entry[2] if len(entry) > 2 else ParameterDescriptor()
            if not isinstance(descriptor, ParameterDescriptor):
                raise TypeError(f'Third element {descriptor} is not a ParameterDescriptor.')
            if name in self._parameters:
                raise ParameterAlreadyDeclaredException([name])
            if not descriptor.dynamic_typing:
                descriptor.type = Parameter.Type.from_parameter_value(value).value
            if not ignore_override and name in self._parameter_overrides:
                value = self._parameter_overrides[name].value
            param = Parameter(name, value=value)
            result = self._apply_descriptor(param, descriptor, check_read_only=False)
            if result.successful:
                result = self._call_on_set([param])
            if not result.successful:
                if result.reason.startswith('Wrong parameter type'):
                    raise InvalidParameterTypeException(
                        param, Parameter.Type(descriptor.type).name
                    )
                raise InvalidParameterValueException(name, value, result.reason)
            descriptor.name = name
            self._descriptors[name] = descriptor
            self._parameters[name] = param
            declared.append(param)
        return declared

    def has_parameter(self, name):
        return name in self._parameters

    def get_parameter(self, name):
        if name not in self._parameters:
            raise ParameterNotDeclaredException(name)
        return self._parameters[name]

    def get_parameters(self, names):
        return [self.get_parameter(name) for name in names]

    def describe_parameter(self, name):
        if name not in self._descriptors:
            raise ParameterNotDeclaredException(name)
        return self._descriptors[name]

    def add_on_set_parameters_callback(self, callback):
        self._on_set_parameters_callbacks.insert(0, callback)

    def remove_on_set_parameters_callback(self, callback):
        self._on_set_parameters_callbacks.remove(callback)

    def set_parameters(self, parameter_list):
        return [self.set_parameters_atomically([param]) for param in parameter_list]

    def set_parameters_atomically(self, parameter_list):
        for param in parameter_list:
            if param.name not in self._parameters:
                raise ParameterNotDeclaredException(param.name)
        for param in parameter_list:
            result = self._apply_descriptor(param, self._descriptors[param.name], True)
            if not result.successful:
                return result
        result = self._call_on_set(parameter_list)
        if not result.successful:
            return result
        for param in parameter_list:
            self._parameters[param.name] = param
        return SetParametersResult(successful=True)

    def _call_on_set(self, parameter_list):
        for callback in self._on_set_parameters_callbacks:
            result = callback(parameter_list)
            if not isinstance(result, SetParametersResult):
                raise TypeError('on-set callbacks must return a SetParametersResult')
            if not result.successful:
                return result
        return SetParametersResult(successful=True)

    def _apply_descriptor(self, parameter, descriptor, check_read_only):
        if check_read_only and descriptor.read_only:
            return SetParametersResult(
                successful=False,
                reason=f'Trying to set a read-only parameter: {parameter.name}.',
            )
        if not descriptor.dynamic_typing and parameter.type_.value != descriptor.type:
            return SetParametersResult(
                successful=False,
                reason=(
                    f"Wrong parameter type, expected '{Parameter.Type(descriptor.type)}' "
                    f"got '{parameter.type_}'"
                ),
            )
        if parameter.type_ == Parameter.Type.INTEGER and descriptor.integer_range:
            rng = descriptor.integer_range[0]
            lo, hi = min(rng.from_value, rng.to_value), max(rng.from_value, rng.to_value)
            if not lo <= parameter.value <= hi:
                return SetParametersResult(
                    successful=False,
                    reason=f'Parameter {parameter.name} out of range. Min: {lo}, Max: {hi}, '
                    f'value: {parameter.value}',
                )
            if rng.step != 0 and (parameter.value - lo) % rng.step != 0:
                return SetParametersResult(
                    successful=False,
                    reason=f'The parameter value for {parameter.name} is not a valid step.',
                )
        if parameter.type_ == Parameter.Type.DOUBLE and descriptor.floating_point_range:
            rng = descriptor.floating_point_range[0]
            lo, hi = min(rng.from_value, rng.to_value), max(rng.from_value, rng.to_value)
            edge = math.isclose(parameter.value, lo, rel_tol=self.PARAM_REL_TOL) or math.isclose(
                parameter.value, hi, rel_tol=self.PARAM_REL_TOL
            )
            if not edge and not lo < parameter.value < hi:
                return SetParametersResult(
                    successful=False,
                    reason=f'Parameter {parameter.name} out of range Min: {lo}, Max: {hi}, '
                    f'value: {parameter.value}',
                )
        return SetParametersResult(successful=True)
