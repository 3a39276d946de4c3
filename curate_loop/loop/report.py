"""The loop's iteration report as one self-contained HTML page: the loop history and the saturation rows in, a
page out (no FiftyOne here).

It answers the questions a team asks after each iteration: *is labeling still paying?* (the edge-case
saturation curve: how much of the sparse region the labeled set covers, batch after batch), *what did the
annotators change?* (labels corrected, boxes added and removed, mislabel suspects confirmed and rejected) and
*how good is the model?* (its cross-validated accuracy against the labels it was trained on, and the model-assist
rate: the share of its pre-annotations annotators accepted as they were -- the figure that says when it could
label on its own).

The verdict under the curve is computed from the curve's own rows (:func:`curate_loop.curation.saturation.
saturation_verdict`, the function `curate list` and the App's panel use), never taken from elsewhere, so the page
cannot show full coverage and conclude "keep curating".
"""

from __future__ import annotations

from html import escape

from curate_loop.adapters.labelstudio import assist
from curate_loop.curation.report_html import CSS
from curate_loop.curation.saturation import saturation_verdict

CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 720, 260, 40

EXTRA_CSS = """
svg.chart { width: 100%; max-width: 760px; height: auto; border: 1px solid var(--line); border-radius: 6px; }
svg.chart .axis { stroke: var(--muted); stroke-width: 1; }
svg.chart .grid { stroke: var(--line); stroke-width: 1; }
svg.chart .after { fill: none; stroke: var(--pick); stroke-width: 2.5; }
svg.chart .gain { fill: var(--labeled); fill-opacity: .35; }
svg.chart .accuracy { fill: none; stroke: var(--labeled); stroke-width: 2.5; }
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
             _saturation_section(saturation), _changes_section(changes), _model_section(iterations),
             _iterations_section(iterations)]
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


def model_assist_rows(iterations: list[dict]) -> list[dict]:
    """Per iteration, the model assist of the pulls it made, merged over its batches
    (:func:`~curate_loop.adapters.labelstudio.assist.merge`): ``{"iteration", "assist"}``, ``assist`` None when no
    pulled task had model pre-annotations. A pull covers every annotated task of its batch so far: a batch pulled
    in two iterations (half annotated at the first) counts its first tasks in both."""
    return [{"iteration": it["iteration"],
             "assist": assist.merge(p.get("model_assist") for p in (it.get("pulled") or {}).values())}
            for it in iterations]


def _model_section(iterations: list[dict]) -> str:
    models = [(it["iteration"], it["model"]) for it in iterations if it.get("model")]
    assists = [r for r in model_assist_rows(iterations) if r["assist"]]
    if not models and not assists:
        return ("<h2>Model</h2><p class=\"note\">No model step yet: batches are picked for coverage alone and pushed "
                "with the labels they have. Declare one under <code>model:</code> in the manifest.</p>")
    body = "".join(
        f"<tr><td>{n}</td><td>{_e(m.get('name') or m.get('kind') or '')}</td>"
        f"<td>{_e(m.get('model_version') or '')}</td>"
        f"<td>{_num(m.get('trained_on'))}</td><td>{_num(m.get('predicted'))}</td><td>{_pct(m.get('cv_accuracy'))}</td>"
        f"<td>{_num(m.get('seconds'), '.1f')}</td></tr>" for n, m in models)
    table = ("<table><thead><tr><th>iteration</th><th>model</th><th>version</th><th>trained on (labels)</th>"
             "<th>samples predicted</th><th>cv accuracy</th><th>seconds</th></tr></thead>"
             f"<tbody>{body}</tbody></table>") if models else ""
    curve = [(m["trained_on"], m["cv_accuracy"]) for _, m in models
             if m.get("cv_accuracy") is not None and m.get("trained_on") is not None]
    return ("<h2>Model</h2>"
            "<p class=\"note\">What the model step trained each iteration, and its k-fold accuracy on the labeled "
            "samples (none for a model trained elsewhere).</p>" + table
            + (_accuracy_chart(curve) if curve else "") + _assist_section(assists))


def _accuracy_chart(points: list[tuple[float, float]]) -> str:
    """Cross-validated accuracy (0-100%) against the labels the model was trained on."""
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
    lo, hi = min(n for n, _ in points), max(n for n, _ in points)
    x = lambda n: CHART_PAD + (inner_w * (n - lo) / (hi - lo) if hi > lo else inner_w / 2)  # noqa: E731
    y = lambda share: CHART_PAD + inner_h * (1 - min(max(share, 0.0), 1.0))  # noqa: E731
    grid = "".join(f"<line class=\"grid\" x1=\"{CHART_PAD}\" x2=\"{CHART_WIDTH - CHART_PAD}\" y1=\"{y(t):.1f}\" "
                   f"y2=\"{y(t):.1f}\"/><text x=\"4\" y=\"{y(t) + 4:.1f}\">{t:.0%}</text>"
                   for t in (0, .25, .5, .75, 1))
    ordered = sorted(points)
    line = " ".join(f"{x(n):.1f},{y(a):.1f}" for n, a in ordered)
    dots = "".join(f"<circle cx=\"{x(n):.1f}\" cy=\"{y(a):.1f}\" r=\"3.5\" fill=\"#1971c2\"/>" for n, a in ordered)
    ticks = "".join(f"<text x=\"{x(n):.1f}\" y=\"{CHART_HEIGHT - 12}\" text-anchor=\"middle\">{n}</text>"
                    for n in sorted({n for n, _ in ordered}))
    return (f"<svg class=\"chart\" viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\" role=\"img\" "
            f"aria-label=\"model accuracy against the labels it was trained on\">{grid}"
            f"<polyline class=\"accuracy\" points=\"{line}\"/>{dots}{ticks}</svg>"
            "<p class=\"note\">Cross-validated accuracy (vertical) against labels trained on (horizontal).</p>")


def _assist_section(rows: list[dict]) -> str:
    if not rows:
        return ("<h3>Model assist</h3><p class=\"note\">No pulled task had the model's pre-annotations yet.</p>")
    cols = "".join(f"<th>{k}</th>" for k in assist.OUTCOMES)
    head = f"<tr><th>iteration</th><th>model version</th><th>class</th><th>predicted</th>{cols}<th>rate</th></tr>"
    body = ""
    for r in rows:
        a = r["assist"]
        body += _assist_row(r["iteration"], a["model_version"], "all", a["totals"], strong=True)
        body += "".join(_assist_row("", "", cls, counts) for cls, counts in a["per_class"].items())
    return ("<h3>Model assist</h3>"
            "<p class=\"note\">How annotators changed the model's pre-annotations, per iteration (the pulls it made) "
            "and per predicted class: <b>rate</b> = accepted as they were / regions predicted. Relabeled: another "
            "class; moved: same class, another box; deleted: no such object; added: an object the model missed "
            "(counted under its annotated class, not in the rate).</p>"
            f"<table><thead>{head}</thead><tbody>{body}</tbody></table>")


def _assist_row(iteration, version, cls, counts: dict, *, strong: bool = False) -> str:
    cell = "th" if strong else "td"
    values = "".join(f"<td>{int(counts.get(k, 0))}</td>" for k in assist.OUTCOMES)
    return (f"<tr><td>{iteration}</td><td>{_e(version or '')}</td><{cell}>{_e(cls)}</{cell}>"
            f"<td>{int(counts.get('predicted', 0))}</td>{values}<td>{_pct(assist.assist_rate(counts))}</td></tr>")


def _pct(value) -> str:
    return "–" if value is None else f"{float(value):.1%}"


def _num(value, spec: str = "") -> str:
    return "–" if value is None else format(value, spec)


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
