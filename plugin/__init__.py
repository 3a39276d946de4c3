"""curate-loop's FiftyOne plugin: thin operators over the ``curate_loop`` package.

FiftyOne loads this file under its own module name, so siblings are imported relatively and the
core only through ``curate_loop``.
"""

from .summary import DatasetSummary


def register(p):
    p.register(DatasetSummary)
