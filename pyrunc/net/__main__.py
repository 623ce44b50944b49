"""``python -m pyrunc.net up|down``: the same as the ``pyrunc-net`` console script."""

import sys

from .hook import main

sys.exit(main())
