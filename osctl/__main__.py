"""``python -m osctl``: the same as the ``osctl`` command."""

from osctl.cli.main import main

main()
