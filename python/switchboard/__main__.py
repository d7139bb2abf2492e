"""``python -m switchboard``: see :mod:`switchboard.serve`."""

import sys

from .serve import main

sys.exit(main())
