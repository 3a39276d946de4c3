"""``python -m curate_loop.cli``: the same as the ``curate-loop`` command."""

from curate_loop.cli import main

main()
