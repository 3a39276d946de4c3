"""The loop's iteration report as one self-contained HTML page: the loop history and the saturation rows in, a
page out (no FiftyOne here).

It answers the two questions a team asks after each iteration: *is labeling still paying?* (the edge-case
saturation curve: how much of the sparse region the labeled set covers, batch after batch) and *what did the
annotators change?* (labels corrected, boxes added and removed, mislabel suspects confirmed and rejected).

The verdict under the curve is computed from the curve's own rows (:func:`curate_loop.curation.saturation.
saturation_verdict`, the function `curate list` and the App's panel use), never taken from elsewhere, so the page
cannot show full coverage and conclude "keep curating".
"""

from __future__ import annotations

from html import escape

from curate_loop.curation.report_html import CSS
from curate_loop.curation.saturation import saturation_verdict

CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 720, 260, 40

EXTRA_CSS = """
svg.chart { width: 100%; max-width: 760px; height: auto; border: 1px solid var(--line); border-radius: 6px; }
svg.chart .axis { stroke: var(--muted); stroke-width: 1; }
svg.chart .grid { stroke: var(--line); stroke-width: 1; }
svg.chart .after { fill: none; stroke: var(--pick); stroke-width: 2.5; }
svg.chart .gain { fill: var(--labeled); fill-opacity: .35; }
svg.chart text { font-size: 11px; fill: var(--muted); }
.verdict { padding: 8px 12px; border-radius: 6px; background: var(--soft); display: inline-block; }
.notice { padding: 8px 12px; border-radius: 6px; background: #fff4e6; border: 1px solid var(--pick); }
"""

CHANGE_COLUMNS = (("applied", "tasks applied"), ("labels_updated", "labels corrected"),
                  ("labels_added", "labels added"), ("labels_removed", "labels removed"),
                  ("cancelled", "cancelled"), ("conflicts", "conflicts"))


def label_changes(iterations: list[dict]) -> list[dict]:
    """Per iteration, the pulled changes summed over its batches, and the mislabel decisions made since the
    previous iteration (the history keeps running totals, so each iteration shows its own share)."""
    rows, previous = [], {}
    for it in iterations:
        row = {"iteration": it["iteration"], "batch": it.get("batch", "")}
        for key, _ in CHANGE_COLUMNS:
            row[key] = sum(_count(pulled.get(key, 0)) for pulled in it.get("pulled", {}).values())
        decisions = it.get("mislabel_decisions", {})
        for key in ("accepted", "rejected", "reannotate"):
            row[f"suspects_{key}"] = max(0, decisions.get(key, 0) - previous.get(key, 0))
        previous = decisions or previous
        row["suspects_found"] = it.get("suspects")
        row["selected"], row["pushed"] = it.get("selected", 0), it.get("pushed", 0)
        rows.append(row)
    return rows


def render_loop_report(iterations: list[dict], saturation: dict, *, dataset_name: str) -> str:
    """The page for ``iterations`` (the loop history, oldest first) and ``saturation`` (from
    ``runs.curation.saturation_history``: ``{"batches": [{name, n_edge, covered_before, covered_after, gain}],
    "notices": [line, ...]}``; the verdict is recomputed from ``batches``)."""
    changes = label_changes(iterations)
    parts = [f"<h1>Curation loop: {_e(dataset_name)}</h1>",
             *(f"<p class=\"notice\">{_e(text)}</p>" for text in saturation.get("notices", [])),
             f"<p class=\"meta\">{len(iterations)} iteration(s); "
             f"{sum(r['selected'] for r in changes)} samples selected, {sum(r['pushed'] for r in changes)} tasks pushed, "
             f"{sum(r['applied'] for r in changes)} annotated tasks pulled back.</p>",
             _saturation_section(saturation), _changes_section(changes), _iterations_section(iterations)]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>Curation loop: {_e(dataset_name)}</title>\n<style>{CSS}{EXTRA_CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(parts) + "\n</main>\n</body>\n</html>\n")


def _saturation_section(saturation: dict) -> str:
    rows = saturation.get("batches", [])
    if not rows:
        return "<h2>Edge-case saturation</h2><p class=\"note\">No batch selected yet.</p>"
    verdict = _e(saturation_verdict(rows).message)
    table = "".join(f"<tr><td>{_e(r['name'])}</td><td>{r['n_edge']}</td><td>{r['covered_before']:.1%}</td>"
                    f"<td>{r['covered_after']:.1%}</td><td>{r['gain']:+.1%}</td></tr>" for r in rows)
    return ("<h2>Edge-case saturation</h2>"
            "<p class=\"note\">Share of the edge region (outliers and sparse clusters) within reach of a labeled or "
            "queued sample, after each batch; the bars are each batch's gain.</p>"
            f"{_saturation_chart(rows)}<p class=\"verdict\">{verdict}</p>"
            "<table><thead><tr><th>batch</th><th>edge samples</th><th>covered before</th><th>covered after</th>"
            f"<th>gain</th></tr></thead><tbody>{table}</tbody></table>")


def _saturation_chart(rows: list[dict]) -> str:
    """Covered-after as a line with each batch's gain as a bar, both on a 0-100% axis."""
    n = len(rows)
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
    step = inner_w / max(n, 1)
    x = [CHART_PAD + step * (i + 0.5) for i in range(n)]
    y = lambda share: CHART_PAD + inner_h * (1 - min(max(share, 0.0), 1.0))  # noqa: E731
    grid = "".join(f"<line class=\"grid\" x1=\"{CHART_PAD}\" x2=\"{CHART_WIDTH - CHART_PAD}\" y1=\"{y(t):.1f}\" "
                   f"y2=\"{y(t):.1f}\"/><text x=\"4\" y=\"{y(t) + 4:.1f}\">{t:.0%}</text>" for t in (0, .25, .5, .75, 1))
    bar_w = min(step * 0.5, 40)
    bars = "".join(f"<rect class=\"gain\" x=\"{xi - bar_w / 2:.1f}\" y=\"{y(max(r['gain'], 0)):.1f}\" width=\"{bar_w:.1f}\" "
                   f"height=\"{CHART_PAD + inner_h - y(max(r['gain'], 0)):.1f}\"/>" for xi, r in zip(x, rows))
    points = " ".join(f"{xi:.1f},{y(r['covered_after']):.1f}" for xi, r in zip(x, rows))
    dots = "".join(f"<circle cx=\"{xi:.1f}\" cy=\"{y(r['covered_after']):.1f}\" r=\"3.5\" fill=\"#e8590c\"/>"
                   for xi, r in zip(x, rows))
    labels = "".join(f"<text x=\"{xi:.1f}\" y=\"{CHART_HEIGHT - 12}\" text-anchor=\"middle\">{_e(r['name'])}</text>"
                     for xi, r in zip(x, rows))
    return (f"<svg class=\"chart\" viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\" role=\"img\" "
            f"aria-label=\"edge-case coverage after each batch\">{grid}{bars}"
            f"<polyline class=\"after\" points=\"{points}\"/>{dots}{labels}</svg>")


def _changes_section(changes: list[dict]) -> str:
    head = "".join(f"<th>{_e(label)}</th>" for _, label in CHANGE_COLUMNS)
    body = "".join(
        f"<tr><td>{r['iteration']}</td>" + "".join(f"<td>{r[key]}</td>" for key, _ in CHANGE_COLUMNS)
        + f"<td>{'' if r['suspects_found'] is None else r['suspects_found']}</td><td>{r['suspects_accepted']}</td>"
        f"<td>{r['suspects_rejected']}</td><td>{r['suspects_reannotate']}</td></tr>" for r in changes)
    totals = {key: sum(r[key] for r in changes) for key, _ in CHANGE_COLUMNS}
    return ("<h2>Label changes</h2>"
            "<p class=\"note\">What each iteration's pull changed in the dataset, and the mislabel suspects reviewers "
            "confirmed (accepted the suggestion), rejected or sent for re-annotation since the previous iteration.</p>"
            f"<table><thead><tr><th>iteration</th>{head}<th>suspects found</th><th>confirmed</th><th>rejected</th>"
            f"<th>re-annotate</th></tr></thead><tbody>{body}</tbody><tfoot><tr><th>total</th>"
            + "".join(f"<th>{totals[key]}</th>" for key, _ in CHANGE_COLUMNS)
            + "<th></th><th></th><th></th><th></th></tr></tfoot></table>")


def _iterations_section(iterations: list[dict]) -> str:
    body = "".join(
        f"<tr><td>{it['iteration']}</td><td>{_e(it.get('batch', ''))}</td><td>{it.get('embedded', 0)}</td>"
        f"<td>{it.get('selected', 0)}</td><td>{it.get('pushed', 0)}</td><td>{it.get('simulated_answers', 0)}</td>"
        f"<td>{it.get('seconds', 0):.1f}</td></tr>" for it in iterations)
    return ("<h2>Iterations</h2><table><thead><tr><th>iteration</th><th>batch</th><th>embedded</th><th>selected</th>"
            "<th>pushed</th><th>simulated answers</th><th>seconds</th></tr></thead>"
            f"<tbody>{body}</tbody></table>"
            + ("<p class=\"note\">Answers marked simulated came from the example's kept-aside true labels, not from a "
               "person.</p>" if any(it.get("simulated_answers") for it in iterations) else ""))


def _count(value) -> int:
    """Pulled counts are ints, except conflicts, stored as their count (the list stays in the pull's record)."""
    return len(value) if isinstance(value, list) else int(value or 0)


def _e(text) -> str:
    return escape(str(text), quote=True)
