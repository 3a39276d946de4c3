"""The saturation verdict, from the numbers the saturation curve shows: one function, so the loop report, `curate
list` and the App's panel can never disagree.

The curve is one row per batch, oldest first, with ``covered_after`` (the share of the edge region within reach of a
labeled or queued sample after the batch) and ``gain`` (what the batch added). Edge cases are *saturated* when the
last batch left almost nothing of the edge region uncovered (``covered_after >= full_coverage``), or when each of the
last ``patience`` batches added less than ``min_gain``: either way, labeling more edge cases has stopped paying.
No FiftyOne here: rows in, a verdict out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from curate_loop.curation.edges import DEFAULT_MIN_GAIN, DEFAULT_PATIENCE
from curate_loop.errors import InvalidInputError

DEFAULT_FULL_COVERAGE = 0.99  # at 99% covered, the edge region has no room left for a batch to add anything


@dataclass(frozen=True)
class SaturationVerdict:
    saturated: bool
    message: str  # one sentence with the numbers it rests on, for a report, a terminal or the panel

    def to_dict(self) -> dict:
        return asdict(self)


def saturation_verdict(rows: list[dict], *, min_gain: float = DEFAULT_MIN_GAIN, patience: int = DEFAULT_PATIENCE,
                       full_coverage: float = DEFAULT_FULL_COVERAGE) -> SaturationVerdict:
    """The verdict on the curve ``rows`` (dicts with ``name``, ``covered_after`` and ``gain``, oldest first)."""
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise InvalidInputError(f"patience, a number of batches, must be a positive integer, got {patience!r}.")
    for name, value in (("min_gain", min_gain), ("full_coverage", full_coverage)):
        if not 0.0 <= value <= 1.0:
            raise InvalidInputError(f"{name} is a share of the edge region in [0, 1], got {value}.")
    if not rows:
        return SaturationVerdict(False, "No batch selected yet: pick one to start the saturation curve.")
    last = rows[-1]
    covered, gain = float(last["covered_after"]), float(last["gain"])
    if covered >= full_coverage:
        return SaturationVerdict(True, f"Edge cases are saturated: {covered:.1%} of the edge region is covered after "
                                       f"{last['name']} ({gain:+.1%}); spend the next budget on the dense regions or "
                                       "on label quality.")
    recent = rows[-patience:]
    if len(rows) >= patience and all(float(r["gain"]) < min_gain for r in recent):
        gains = ", ".join(f"{float(r['gain']):+.1%}" for r in recent)
        return SaturationVerdict(True, f"Edge cases are saturated: the last {patience} batch(es) each added under "
                                       f"{min_gain:.0%} of the edge region ({gains}; {covered:.1%} covered); spend "
                                       "the next budget on the dense regions or on label quality.")
    return SaturationVerdict(False, f"Batches still add edge-case coverage: {last['name']} added {gain:+.1%} "
                                    f"({covered:.1%} of the edge region covered): keep curating.")
