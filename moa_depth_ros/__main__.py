"""``python -m moa_depth_ros`` runs the ``moa-depth`` command line."""

import sys

from moa_depth_ros.cli import main

sys.exit(main())
