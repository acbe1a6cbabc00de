"""``python -m satsweep``: the same entry point as the ``satsweep`` command."""

from satsweep.cli import main

main()
