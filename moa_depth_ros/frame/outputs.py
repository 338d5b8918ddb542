"""What leaves the package for one frame: the output topics and their serialized messages.

One topic table (``OUTPUTS``) and one pure function (``frame_outputs``) from a processed
frame and the node's settings to the serialized messages of that frame, in publishing order.
The node publishes them, the bag tool writes them: "build, then publish or write", so the
bag holds byte for byte what the node would have sent. No ROS imports.

Every message carries the image's stamp and frame_id (REP 103). The small CameraInfo goes
first: behind a frame's megabytes of depth and cloud fragments it was the output a loaded
machine lost most often.

Topic names pair the way image_transport pairs them (a CameraSubscriber, RViz's DepthCloud
and depth_image_proc take the camera_info beside an image: ``dirname(topic)/camera_info``):
the depth is ``depth/image_rect``, depth_image_proc's own name for a rectified depth image,
so ``depth/camera_info`` (the rectified camera the depth, confidence, preview and points all
describe) is its sibling, and the confidence and the preview are siblings of both.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from moa_depth_ros.frame import cdr, msgs
from moa_depth_ros.frame.pipeline import FrameResult

IMAGE = 'sensor_msgs/msg/Image'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
POINT_CLOUD = 'sensor_msgs/msg/PointCloud2'


@dataclasses.dataclass(frozen=True)
class OutputTopic:
    """An output: its key, its topic name relative to the node's namespace, its type."""

    key: str
    topic: str
    msgtype: str


#: Every output, in publishing order.
OUTPUTS: tuple[OutputTopic, ...] = (
    OutputTopic('depth_info', 'depth/camera_info', CAMERA_INFO),
    OutputTopic('depth', 'depth/image_rect', IMAGE),
    OutputTopic('confidence', 'depth/confidence', IMAGE),
    OutputTopic('points', 'points', POINT_CLOUD),
    OutputTopic('colored', 'depth/colored', IMAGE),
)
OUTPUT_BY_KEY: dict[str, OutputTopic] = {output.key: output for output in OUTPUTS}


class OutputSettings(Protocol):
    """The settings an output depends on (``params.NodeSettings`` has them)."""

    depth_encoding: str
    publish_confidence: bool
    publish_colored: bool


@dataclasses.dataclass(frozen=True)
class Output:
    """One serialized output message of a frame."""

    key: str
    data: bytes

    @property
    def topic(self) -> OutputTopic:
        return OUTPUT_BY_KEY[self.key]


def frame_outputs(
    result: FrameResult, header: cdr.Header, settings: OutputSettings
) -> list[Output]:
    """Serialize a ``FrameResult``'s outputs for ``header`` (the image's stamp and frame).

    depth always; depth/camera_info and points when the frame has a camera model and a cloud;
    confidence and the coloured preview when the settings ask for them. The preview spans the
    depth range the frame kept (``FrameResult.range_m``).
    """
    out: list[Output] = []
    if result.camera is not None:
        out.append(
            Output('depth_info', cdr.camera_info(header, result.camera.to_camera_info_fields()))
        )
    out.append(
        Output(
            'depth', cdr.image(header, msgs.encode_depth(result.depth_m, settings.depth_encoding))
        )
    )
    if settings.publish_confidence:
        out.append(
            Output('confidence', cdr.image(header, msgs.encode_confidence(result.confidence)))
        )
    if result.cloud is not None:
        out.append(Output('points', cdr.point_cloud(header, msgs.encode_cloud(result.cloud))))
    if settings.publish_colored:
        colored = msgs.encode_colored_depth(result.depth_m, *result.range_m)
        out.append(Output('colored', cdr.image(header, colored)))
    return out
