"""``python -m switchboard``: see :mod:`switchboard.serve`."""

from .serve import main

main()
