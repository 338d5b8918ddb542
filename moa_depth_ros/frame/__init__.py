"""The frame path, no ROS imports: one camera frame in, its depth, confidence and cloud out.

``msgs`` decodes and encodes message payloads, ``geometry`` is the camera model and
back-projection, ``scale`` the canonical-camera conversion, ``pipeline`` runs a frame through
a network, ``outputs`` turns a processed frame into the serialized messages (``cdr``) that
the node publishes and the bag tool writes.
"""
