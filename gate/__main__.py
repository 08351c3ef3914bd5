"""``python -m gate``: the same as the ``gate`` command."""

from gate._cli import entry

entry()
