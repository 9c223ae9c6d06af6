"""``python -m imgshard``: the same as the ``imgshard`` command."""

import sys

from .tools.cli import main

sys.exit(main())
