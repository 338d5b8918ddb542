"""managed_depth_node (lifecycle) as its own process, driven through the real lifecycle services.

Every transition goes through ``lifecycle_msgs/srv/ChangeState`` and ``GetState`` on the
node's ``~/change_state`` and ``~/get_state``, as Nav2's lifecycle_manager
(nav2_lifecycle_manager/src/lifecycle_manager.cpp, changeStateForNode) and ``ros2 lifecycle
set`` call them. Checks that a failed configure leaves the node unconfigured and says why,
that outputs exist (and frames come out) only while active, that deactivate keeps the engine
and cleanup releases it.
"""

from __future__ import annotations

import pytest
from ros_graph import ERROR, NodeProcess, RosGraph, camera_info_msg, grey_image_msg, wait_for
from tiny_model import write_tiny_onnx

from moa_depth_ros.frame.outputs import OUTPUT_BY_KEY, OUTPUTS

pytestmark = [pytest.mark.ros2]

NS = '/cam'
NODE = f'{NS}/moa_depth_node'
W, H = 40, 30
START_TIMEOUT_S = 30.0


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return write_tiny_onnx(tmp_path_factory.mktemp('model') / 'tiny.onnx', range_m=(0.5, 10.0))


def _topic(key):
    return f'{NS}/{OUTPUT_BY_KEY[key].topic}'


class Lifecycle:
    """Clients of the node's lifecycle services, on the probe node."""

    def __init__(self, probe):
        from lifecycle_msgs.srv import ChangeState, GetState

        self.probe = probe
        self.change = probe.create_client(ChangeState, f'{NODE}/change_state')
        self.get = probe.create_client(GetState, f'{NODE}/get_state')

    def _call(self, client, request):
        assert client.wait_for_service(timeout_sec=START_TIMEOUT_S), client.srv_name
        future = client.call_async(request)
        assert wait_for(future.done, 30.0), f'no answer from {client.srv_name}'
        return future.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(self.get, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request(transition=Transition(id=transition_id))
        return self._call(self.change, request).success


def node_publishers(probe) -> dict[str, int]:
    """How many publishers the node has on each output topic and on /diagnostics (graph)."""
    topics = [_topic(output.key) for output in OUTPUTS] + ['/diagnostics']
    return {
        topic: sum(
            1
            for info in probe.get_publishers_info_by_topic(topic)
            if info.node_name == 'moa_depth_node'
        )
        for topic in topics
    }


def test_every_transition_through_the_lifecycle_services(ros_domain, tmp_path, model_path):
    from lifecycle_msgs.msg import Transition
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from sensor_msgs.msg import Image

    graph = RosGraph(ros_domain)
    probe = graph.probe('lifecycle_manager')
    depth = probe.subscribe(Image, _topic('depth'))
    camera = probe.publisher(Image, f'{NS}/image_raw')
    process = NodeProcess(
        [
            '--ros-args',
            '-r',
            f'__ns:={NS}',
            '-r',
            'image:=image_raw',
            '-p',
            f'model_path:={model_path}',
            '-p',
            'backend:=onnxruntime',
            '-p',
            'min_depth_m:=20.0',  # beyond the model's 10 m: configure must fail and say so
        ],
        ros_domain,
        tmp_path / 'managed.log',
        executable='managed_depth_node',
    )
    lifecycle = Lifecycle(probe)

    def frame_comes_out(sec: int, timeout_s: float = 10.0) -> bool:
        probe.send(f'{NS}/camera_info', camera_info_msg(W, H, 50.0, 50.0, 19.5, 14.5, sec=sec))
        probe.send(f'{NS}/image_raw', grey_image_msg(W, H, 128, sec=sec))
        return depth.wait_match(lambda m: m.header.stamp.sec == sec, timeout_s) is not None

    try:
        assert lifecycle.state() == 'unconfigured', process.output()
        assert not any(node_publishers(probe).values())

        # configure fails (depth range), stays unconfigured, and the log says why.
        assert not lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state() == 'unconfigured'
        assert probe.wait_log('configure failed, staying unconfigured', ERROR)
        assert 'min_depth_m' in probe.wait_log('configure failed', ERROR)

        # Parameters can be set while unconfigured (checked, then read by configure).
        set_params = probe.create_client(SetParameters, f'{NODE}/set_parameters')
        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.0)
        (result,) = lifecycle._call(
            set_params,
            SetParameters.Request(parameters=[ParameterMsg(name='min_depth_m', value=value)]),
        ).results
        assert result.successful, result.reason

        assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state() == 'inactive'
        assert probe.wait_log('configured: tiny_test_model')
        assert not any(node_publishers(probe).values())  # outputs only while active

        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert lifecycle.state() == 'active'
        assert wait_for(lambda: all(node_publishers(probe).values()), 10.0), node_publishers(probe)
        assert frame_comes_out(1)

        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.state() == 'inactive'
        assert wait_for(lambda: not any(node_publishers(probe).values()), 10.0)
        assert wait_for(lambda: camera.get_subscription_count() == 0, 10.0)  # not listening

        # activate again: the engine stayed loaded (no second 'configured').
        assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        assert lifecycle.state() == 'active'
        assert frame_comes_out(2)
        assert len([m for m in probe.log_lines() if m.startswith('configured:')]) == 1

        assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
        assert lifecycle.state() == 'unconfigured'
        assert probe.wait_log('cleaned up: the engine is released')
        assert wait_for(lambda: not any(node_publishers(probe).values()), 10.0)

        assert lifecycle.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert lifecycle.state() == 'finalized'
        process.send_signal()
        assert process.wait(10.0) == 0, process.output()
        output = process.output()
        assert 'Traceback' not in output, output
    finally:
        process.stop()
        graph.close()
