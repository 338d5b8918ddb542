"""``moa-depth bag``: the frame path over a rosbag2 recording, written to a new bag.

``process`` reads the camera topics, runs every frame and writes the same bytes the node
would publish; ``recovery`` opens recordings whose recorder died.
"""
