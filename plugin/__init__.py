"""curate-loop's FiftyOne plugin: thin operators over the ``curate_loop`` package.

One module per operator group; what they all do the same way (config, delegation, form widgets, progress,
results, showing the result) is in ``forms``. FiftyOne loads this file under its own module name, so siblings are
imported relatively and the core only through ``curate_loop``.
"""

from curate_loop.quiet import quiet_fiftyone

from .curation import FindNearDuplicates, ScoreEdgeCases, SelectBatch
from .embeddings import BuildIndexAndMap, ComputeEmbeddings
from .label_issues import FindLabelIssues, ReviewLabelIssues
from .labelstudio import PullFromLabelStudio, PushToLabelStudio
from .loop import CurationLoopPanel, RunLoopIteration
from .mislabels import FindMislabels, ReviewMislabels
from .quality import ComputeQuality, DataQualityPanel, QualityExclude, TagQualityIssues
from .searches import ApplySearch, SaveSearch
from .shards import ComputeEmbeddingsShard, QueueShardedEmbeddings
from .summary import DatasetSummary

OPERATORS = (DatasetSummary, ComputeEmbeddings, BuildIndexAndMap, SaveSearch, ApplySearch, SelectBatch,
             ScoreEdgeCases, FindNearDuplicates, FindMislabels, ReviewMislabels)
OPERATORS += (PushToLabelStudio, PullFromLabelStudio, RunLoopIteration)
OPERATORS += (FindLabelIssues, ReviewLabelIssues)
OPERATORS += (ComputeQuality, QualityExclude, TagQualityIssues)
OPERATORS += (QueueShardedEmbeddings, ComputeEmbeddingsShard)
PANELS = (CurationLoopPanel, DataQualityPanel)
quiet_fiftyone()  # the App server process loads this module: its removed-App-config warnings go too


def register(p):
    for operator in OPERATORS + PANELS:
        p.register(operator)
