"""The curation report as one self-contained HTML file: ``selection_metrics``'s dict in, a page out.

Self-contained so that it can be mailed, attached to a ticket or opened years later: CSS inline, images as base64
data URIs, the 2-D map as inline SVG, no scripts, no fonts or files fetched from anywhere. Every piece of text
that comes from data (title, class names, captions) is escaped. No FiftyOne here: the caller renders thumbnails
(``thumbnail_bytes``) and projects the embeddings.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import tempfile
from html import escape
from pathlib import Path

import numpy as np

from curate_loop.errors import InvalidInputError

logger = logging.getLogger(__name__)

MAP_MAX_POINTS = 5_000  # more circles make the file heavy and the browser slow, and show nothing more
MAP_WIDTH, MAP_HEIGHT, MAP_PADDING = 760, 480, 12
THUMBNAIL_SIZE = 96  # pixels, longest side
THUMBNAIL_QUALITY = 80  # JPEG: ~3 kB for a 96 px thumbnail
CLUSTER_KEY = re.compile(r"cluster (\d+)(?:\s|$)")  # thumbnails of one cluster: "cluster 3", "cluster 3 (sparsest)"

# metric -> (label, kind of number, what it means)
METRIC_INFO = {
    "cluster_coverage": ("Cluster coverage", "share", "natural clusters holding a labeled or picked sample"),
    "small_cluster_coverage": ("Small-cluster coverage", "share", "sparse (small) clusters reached"),
    "class_coverage": ("Class coverage", "share", "classes present holding a labeled or picked sample"),
    "delta_coverage": ("δ-coverage", "share", "samples within distance δ of a labeled or picked one"),
    "kcenter_radius": ("k-center radius", "distance", "farthest any sample is from a labeled or picked one"),
    "kcenter_radius_p95": ("k-center radius (95th pct.)", "distance", "the same, ignoring the farthest 5%"),
    "edge_cases": ("Edge cases in batch", "count", "picks that are outliers or in sparse clusters"),
}

CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --soft: #f5f7fa; --pick: #e8590c; --labeled: #1c7ed6;
        --rest: #9aa5b1; --good: #2b8a3e; --queued: #7048e8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1040px; margin: 0 auto; padding: 32px 24px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 40px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 20px 0 6px; }
p.meta, p.note, .muted { color: var(--muted); margin: 4px 0; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fbfcfd; }
tr.miss td { color: #c92a2a; }
td strong { color: var(--good); }
td small { display: block; color: var(--muted); font-weight: normal; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 104px; font-size: 12px; color: var(--muted); text-align: center; }
figure img { width: 96px; height: 96px; object-fit: contain; background: var(--soft); border-radius: 4px; }
figcaption { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
svg.map { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
svg.map .rest { fill: var(--rest); fill-opacity: .45; }
svg.map .labeled { fill: var(--labeled); fill-opacity: .85; }
svg.map .queued { fill: var(--queued); fill-opacity: .85; }
.notice { padding: 8px 12px; border-radius: 6px; background: #fff4e6; border: 1px solid var(--pick); }
svg.map .pick { fill: var(--pick); stroke: #fff; stroke-width: .8; }
.legend span { display: inline-block; margin-right: 18px; }
svg.bars { width: 100%; height: auto; }
svg.bars text { font-size: 12px; fill: var(--ink); }
svg.bars .batch { fill: var(--pick); }
svg.bars .pool { fill: var(--rest); }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 6px; }
"""


def render_report(metrics: dict, *, title: str, thumbnails: dict[str, list[tuple[str, bytes]]] | None = None,
                  map_points=None, map_highlight=None, map_labeled=None, map_queued=None, notices=()) -> str:
    """One self-contained HTML document presenting ``metrics`` (from ``selection_metrics``).

    thumbnails: section key -> (caption, JPEG/PNG/GIF/WebP bytes) pairs. A key ``"cluster <id>"`` (or one starting
        so, e.g. ``"cluster 3 (sparsest)"``) of a sparsest or densest cluster appears with that cluster; any other
        key gets its own group under "More samples".
    map_points: (n, 2) coordinates of a 2-D projection, drawn as an SVG scatter plot.
    map_highlight, map_labeled, map_queued: rows of ``map_points`` (indices or an (n,) bool mask) in the batch /
        labeled / queued in an earlier batch; above ``MAP_MAX_POINTS`` points the others are thinned evenly, every
        batch point is kept. The legend counts every row of each, so it agrees with the header's counts.
    notices: lines shown at the top, each in its own box (e.g. that the embeddings used random weights).
    ``metrics["batch"]``, when given, may carry the model's part in the batch (``BatchSummary``'s ``mode``,
    ``contributions``, ``uncertainty``, ``class_histogram``): shown under "Model in the loop".
    """
    extremes = set(metrics.get("sparsest_clusters", []) + metrics.get("densest_clusters", []))
    by_cluster, others = _split_thumbnails(thumbnails or {}, extremes)
    parts = [_header(metrics, title), *(_notice(text) for text in notices), _model(metrics.get("batch") or {}),
             _headline(metrics.get("summary", {})), _classes(metrics.get("classes")),
             _cluster_table(metrics), _extremes(metrics, by_cluster), _more_samples(others)]
    if map_points is not None:
        parts.append(_map(map_points, map_highlight, map_labeled, map_queued))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(p for p in parts if p) + "\n</main>\n</body>\n</html>\n")


def write_report(html: str, path) -> Path:
    """Write the page to ``path`` atomically: a reader never sees half a file, a failed write leaves the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(html)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be opened and shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def thumbnail_bytes(path, size: int = THUMBNAIL_SIZE) -> bytes | None:
    """A small JPEG of the image at ``path`` (longest side ``size``), or None if it cannot be read. Never raises:
    one broken file must not cost the whole report."""
    try:
        from PIL import Image, ImageOps

        with Image.open(path) as image:
            image.draft("RGB", (2 * size, 2 * size))  # JPEG: decode at reduced scale, much faster for photos
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((size, size))
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=THUMBNAIL_QUALITY)
            return out.getvalue()
    except Exception as exc:  # PIL raises many types on broken files (OSError, SyntaxError, struct.error, ...)
        logger.debug("No thumbnail for %s: %s", path, exc)
        return None


# -- sections ------------------------------------------------------------------------------------------------------
def _header(metrics: dict, title: str) -> str:
    """Title and counts. With the batch's pool counts (``metrics["batch"]["pool"]``: labeled, queued, excluded,
    available) those are shown, each on its own; without them, the rows the metrics counted as covered."""
    c = metrics.get("counts", {})
    pool = (metrics.get("batch") or {}).get("pool") or {}
    delta = metrics.get("delta", {})
    delta_how = ("given" if delta.get("given") else
                 f"median distance to the {delta.get('neighbors')}th nearest neighbour among "
                 f"{delta.get('sample_size', 0):,} pool samples")
    if pool:
        state = (f"labeled {pool['labeled']:,} · queued in earlier batches {pool['queued']:,} · near-duplicates set "
                 f"aside {pool['excluded']:,} · pool {pool['available']:,}")
        covered = "labeled, queued and set-aside samples"
    else:
        state = f"pool {c.get('n_pool', 0):,} · covered already {c.get('n_labeled', 0):,}"
        covered = "samples covered already"
    return (f"<h1>{_e(title)}</h1>\n"
            f"<p class=\"meta\">{c.get('n_rows', 0):,} samples · {state} · batch {c.get('n_picked', 0):,} · "
            f"{c.get('n_clusters', 0):,} natural clusters ({_e(c.get('clustering_method', '?'))}) · "
            f"{c.get('n_noise', 0):,} outliers</p>\n"
            f"<p class=\"meta\">Random baseline: {c.get('n_random', 0)} random batches of {c.get('n_picked', 0):,} "
            f"from the pool (seeds from {c.get('seed', 0)}), {covered} counted as covered in both (the tables' "
            f"\"covered\" column). Distances are cosine, measured from {c.get('distance_rows', 0):,} samples; "
            f"δ = {delta.get('value', 0):.3f} ({_e(delta_how)}).</p>")


# objective -> (label, kind of number, what the figure means); figures of curate_loop.curation.combined
CONTRIBUTION_INFO = {
    "diversity": ("Diversity", "share", "coverage gain: how much closer the pool came to a labeled or picked sample "
                                        "(1 - mean distance after / before)"),
    "uncertainty": ("Uncertainty", "share", "mean percentile rank of the batch's uncertainty in the pool (50%: what "
                                            "a random batch gets; 100%: the most uncertain samples)"),
    "class_balance": ("Class balance", "number", "distance of the batch's predicted-class shares from the target "
                                                "(total variation; 0: on target; lower is better)"),
    "class_balance_pool": ("Class balance of the pool", "number", "the same distance for the pool: what a random "
                                                                  "batch would get"),
}
BAR_ROW, BAR_LABEL, BAR_WIDTH = 26, 90, 470  # predicted-class bars: row height, label column, longest bar (px)


def _model(batch: dict) -> str:
    """The model's part in the batch: the mode, each objective's figure, the uncertainty of batch and pool, and the
    predicted-class histogram of the batch against the pool. Nothing for batches recorded before it existed."""
    if not batch.get("mode"):
        return ""
    rows = []
    for name, value in (batch.get("contributions") or {}).items():
        label, kind, meaning = CONTRIBUTION_INFO.get(name, (name, "number", ""))
        shown = "—" if value is None else _fmt(value, kind)
        rows.append(f"<tr><td>{_e(label)}<small>{_e(meaning)}</small></td><td>{_e(shown)}</td></tr>")
    table = ("<table>\n<thead><tr><th>Objective</th><th>Contribution</th></tr></thead>\n<tbody>\n"
             + "\n".join(rows) + "\n</tbody>\n</table>") if rows else ""
    unc = batch.get("uncertainty") or {}
    lines = [f"Mode: <strong>{_e(batch['mode'])}</strong>."]
    if unc.get("score"):
        means = ""
        if unc.get("batch_mean") is not None and unc.get("pool_mean") is not None:
            means = f" Mean uncertainty: batch {unc['batch_mean']:.3f}, pool {unc['pool_mean']:.3f}."
        lines.append(f"Uncertainty: {_e(unc['score'])} of {_e(repr(unc.get('field')))}.{means}")
        if unc.get("without_predictions"):
            lines.append(f"{unc['without_predictions']:,} pool samples have no prediction.")
    notes = _notice(unc["note"]) if unc.get("note") else ""
    return ("<h2>Model in the loop</h2>\n<p class=\"note\">" + " ".join(lines) + "</p>\n" + notes + table
            + _class_bars(batch.get("class_histogram") or {}))


def _class_bars(histogram: dict) -> str:
    """Per predicted class two bars, the batch's share (orange) over the pool's (grey), with the counts: a sample
    counts once for each class its prediction holds."""
    batch, pool = histogram.get("batch") or {}, histogram.get("pool") or {}
    classes = list(dict.fromkeys([*pool, *batch]))
    if not classes:
        return ""
    n_batch, n_pool = max(sum(batch.values()), 1), max(sum(pool.values()), 1)
    shares = [(batch.get(c, 0) / n_batch, pool.get(c, 0) / n_pool) for c in classes]
    top = max(max(b, p) for b, p in shares) or 1.0
    height = BAR_ROW * len(classes) + 8
    width = BAR_LABEL + BAR_WIDTH + 200
    parts = []
    for i, (c, (b, p)) in enumerate(zip(classes, shares)):
        y = 4 + i * BAR_ROW
        parts.append(f"<text x=\"0\" y=\"{y + 15}\">{_e(c)}</text>"
                     f"<rect class=\"batch\" x=\"{BAR_LABEL}\" y=\"{y + 2}\" width=\"{BAR_WIDTH * b / top:.1f}\" "
                     f"height=\"10\"/><rect class=\"pool\" x=\"{BAR_LABEL}\" y=\"{y + 13}\" "
                     f"width=\"{BAR_WIDTH * p / top:.1f}\" height=\"8\"/>"
                     f"<text x=\"{BAR_LABEL + BAR_WIDTH + 8}\" y=\"{y + 15}\">batch {batch.get(c, 0):,} "
                     f"({b:.0%}) · pool {pool.get(c, 0):,} ({p:.0%})</text>")
    return ("<h3>Predicted classes: batch against pool</h3>\n<p class=\"legend\"><span><i style=\"background:"
            "var(--pick)\"></i>batch</span><span><i style=\"background:var(--rest)\"></i>pool</span>"
            "<span class=\"muted\">samples whose prediction holds the class, as a share of each</span></p>\n"
            f"<svg class=\"bars\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" role=\"img\" "
            f"aria-label=\"predicted classes of the batch and the pool\">" + "".join(parts) + "</svg>")


def _notice(text: str) -> str:
    return f"<p class=\"notice\">{_e(text)}</p>"


def _headline(summary: dict) -> str:
    """Ours against random, mean ± std, per metric; ours in bold where it is better."""
    rows = []
    for name, s in summary.items():
        label, kind, meaning = METRIC_INFO.get(name, (name, "number", ""))
        direction = "" if s["higher_is_better"] else " (lower is better)"
        ours = _e(_fmt(s["ours"], kind, ours=True))
        rows.append(f"<tr><td>{_e(label)}<small>{_e(meaning + direction)}</small></td>"
                    f"<td>{f'<strong>{ours}</strong>' if s['better'] else ours}</td>"
                    f"<td>{_e(_fmt(s['random_mean'], kind))} ± {_e(_fmt(s['random_std'], kind))}</td>"
                    f"<td>{_e(_ratio(s['ratio']))}</td><td>{_e(_diff(s['difference'], kind))}</td></tr>")
    return ("<h2>Batch against random</h2>\n<table class=\"headline\">\n<thead><tr><th>Metric</th><th>This batch</th>"
            "<th>Random (mean ± std)</th><th>Ratio</th><th>Difference</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody>\n</table>")


def _classes(classes: dict | None) -> str:
    if not classes:
        return ""
    rows = [f"<tr{_miss(r)}><td>{_e(r['class'])}</td>"
            f"<td>{r['rows']:,}</td><td>{r['labeled']:,}</td><td>{r['picked']:,}</td>"
            f"<td>{r['expected_random']:.1f}</td></tr>" for r in classes["table"]]
    return (f"<h2>Classes</h2>\n<p class=\"note\">{classes['n_classes']} classes; {classes['unknown_rows']:,} samples "
            f"without a class, {classes['unknown_in_batch']:,} of them in the batch.</p>\n"
            "<table>\n<thead><tr><th>Class</th><th>Samples</th><th>Covered</th><th>Picked</th>"
            "<th>Random would pick</th></tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>")


def _cluster_table(metrics: dict) -> str:
    """Per natural cluster, largest first; clusters nothing reaches in red."""
    rows = [f"<tr{_miss(r)}><td>{r['id']}</td>"
            f"<td>{r['size']:,}</td><td>{_e(r['kind'])}</td><td>{r['density']:.3f}</td><td>{r['labeled']:,}</td>"
            f"<td>{r['picked']:,}</td><td>{r['expected_random']:.1f}</td></tr>" for r in metrics.get("clusters", [])]
    noise = metrics.get("noise") or {}
    if noise.get("size"):
        rows.append(f"<tr><td>outliers</td><td>{noise['size']:,}</td><td>noise</td><td></td>"
                    f"<td>{noise['labeled']:,}</td><td>{noise['picked']:,}</td>"
                    f"<td>{noise['expected_random']:.1f}</td></tr>")
    edge = metrics.get("edge_cases") or {}
    note = (f"<p class=\"note\">Edge cases in the batch: {edge.get('count', 0):,} ({edge.get('noise', 0):,} outliers, "
            f"{edge.get('in_sparse_clusters', 0):,} in sparse clusters). Covered: labeled, queued or set aside "
            "already. Red: clusters with no covered or picked sample.</p>\n")
    return ("<h2>Natural clusters</h2>\n" + note + "<table>\n<thead><tr><th>Cluster</th><th>Size</th><th>Kind</th>"
            "<th>Density</th><th>Covered</th><th>Picked</th><th>Random would pick</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody>\n</table>")


def _extremes(metrics: dict, thumbnails: dict[int, list]) -> str:
    """The sparsest and densest clusters, each with its thumbnails: what "rare" and "common" look like here."""
    by_id = {r["id"]: r for r in metrics.get("clusters", [])}
    parts = []
    for heading, key in (("Sparsest clusters", "sparsest_clusters"), ("Densest clusters", "densest_clusters")):
        ids = [c for c in metrics.get(key, []) if c in by_id]
        if not ids:
            continue
        parts.append(f"<h2>{heading}</h2>")
        for c in ids:
            r = by_id[c]
            parts.append(f"<h3>Cluster {c} · {r['size']:,} samples · {_e(r['kind'])} · density "
                         f"{r['density']:.3f} · {r['labeled']:,} covered · {r['picked']:,} picked</h3>")
            parts.append(_cards(thumbnails.get(c, [])))
    return "\n".join(parts)


def _more_samples(groups: dict) -> str:
    if not groups:
        return ""
    return "<h2>More samples</h2>\n" + "\n".join(f"<h3>{_e(key)}</h3>\n{_cards(items)}"
                                               for key, items in groups.items())


def _cards(items: list[tuple[str, bytes]]) -> str:
    if not items:
        return "<p class=\"muted\">No thumbnails.</p>"
    figures = [f"<figure><img src=\"data:{_mime(data)};base64,{base64.b64encode(data).decode('ascii')}\" "
               f"alt=\"{_e(caption)}\"><figcaption title=\"{_e(caption)}\">{_e(caption)}</figcaption></figure>"
               for caption, data in items]
    return "<div class=\"cards\">" + "".join(figures) + "</div>"


def _map(points, highlight, labeled, queued=None) -> str:
    """The 2-D projection as an SVG scatter plot: the rest grey, labeled blue, queued violet, the batch orange on
    top. The legend counts every row of each, shown or thinned out."""
    xy = np.asarray(points, dtype=float)
    if xy.ndim != 2 or xy.shape[1] != 2 or not np.isfinite(xy).all():
        raise InvalidInputError(f"map_points must be finite (n, 2) coordinates, got shape {xy.shape}; pass a 2-D "
                                "projection of the embeddings.")
    n = len(xy)
    picks = _map_rows(highlight, n, "map_highlight")
    done = _map_rows(labeled, n, "map_labeled") & ~picks
    waiting = _map_rows(queued, n, "map_queued") & ~picks & ~done
    keep = _thinned(picks, MAP_MAX_POINTS)
    sx, sy = _to_canvas(xy)
    layers = []
    for css, rows, radius in (("rest", keep & ~picks & ~done & ~waiting, 1.6), ("labeled", keep & done, 2.6),
                              ("queued", keep & waiting, 2.6), ("pick", picks, 3.6)):
        layers += [f"<circle class=\"{css}\" cx=\"{sx[i]:.1f}\" cy=\"{sy[i]:.1f}\" r=\"{radius}\"/>"
                   for i in np.flatnonzero(rows)]
    shown = int(keep.sum())
    note = f" ({shown:,} of {n:,} points shown; every batch point is)" if shown < n else ""
    queued_legend = (f"<span><i style=\"background:var(--queued)\"></i>queued ({int(waiting.sum()):,})</span>"
                     if waiting.any() else "")
    return (f"<h2>Map</h2>\n<p class=\"legend\"><span><i style=\"background:var(--pick)\"></i>batch "
            f"({int(picks.sum()):,})</span><span><i style=\"background:var(--labeled)\"></i>labeled "
            f"({int(done.sum()):,})</span>{queued_legend}"
            "<span><i style=\"background:var(--rest)\"></i>other samples</span>"
            f"<span class=\"muted\">{_e(note)}</span></p>\n"
            f"<svg class=\"map\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {MAP_WIDTH} {MAP_HEIGHT}\" "
            f"role=\"img\" aria-label=\"2-D map of the samples\">\n" + "\n".join(layers) + "\n</svg>")


def _thinned(picks: np.ndarray, max_points: int) -> np.ndarray:
    """(n,) bool, points to draw: every pick, and evenly spaced others up to ``max_points`` in all (deterministic)."""
    keep = picks.copy()
    others = np.flatnonzero(~picks)
    room = max(max_points - int(picks.sum()), 0)
    if len(others) <= room:
        keep[others] = True
    elif room:
        keep[others[np.linspace(0, len(others) - 1, room).astype(np.int64)]] = True
    return keep


def _to_canvas(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canvas coordinates, same scale on both axes (a projection's shape is part of what it shows), y pointing up."""
    low = xy.min(axis=0) if len(xy) else np.zeros(2)
    span = np.maximum(xy.max(axis=0) - low, 1e-12) if len(xy) else np.ones(2)
    scale = min((MAP_WIDTH - 2 * MAP_PADDING) / span[0], (MAP_HEIGHT - 2 * MAP_PADDING) / span[1])
    offset = (np.array([MAP_WIDTH, MAP_HEIGHT]) - scale * span) / 2
    x = offset[0] + scale * (xy[:, 0] - low[0])
    y = MAP_HEIGHT - (offset[1] + scale * (xy[:, 1] - low[1]))
    return x, y


def _map_rows(rows, n: int, name: str) -> np.ndarray:
    """(n,) bool mask from indices or a mask (None: none)."""
    mask = np.zeros(n, dtype=bool)
    if rows is None:
        return mask
    arr = np.asarray(rows)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise InvalidInputError(f"{name} as a mask must have one entry per map point ({n}), got shape {arr.shape}.")
        return arr.copy()
    if arr.size and (arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() >= n):
        raise InvalidInputError(f"{name} must be row numbers of map_points in [0, {n}) or a bool mask; got dtype "
                                f"{arr.dtype}, shape {arr.shape}.")
    mask[arr.astype(np.int64)] = True
    return mask


def _split_thumbnails(thumbnails: dict, clusters: set[int]) -> tuple[dict[int, list], dict[str, list]]:
    """Thumbnails of each of ``clusters`` (by key "cluster <id>..."), and the groups under any other key."""
    by_cluster: dict[int, list] = {}
    others: dict[str, list] = {}
    for key, items in thumbnails.items():
        match = CLUSTER_KEY.match(key)
        if match and int(match.group(1)) in clusters:
            by_cluster.setdefault(int(match.group(1)), []).extend(items)
        else:
            others[key] = items
    return by_cluster, others


# -- formatting ----------------------------------------------------------------------------------------------------
def _miss(row: dict) -> str:
    """The class attribute of a table row nothing labeled or picked reaches."""
    return ' class="miss"' if row["picked"] + row["labeled"] == 0 else ""


def _e(text) -> str:
    return escape(str(text), quote=True)


def _fmt(value: float, kind: str, *, ours: bool = False) -> str:
    if kind == "share":
        return f"{value:.1%}"
    if kind == "distance":
        return f"{value:.3f}"
    if kind == "count" and ours:
        return f"{value:,.0f}"
    return f"{value:,.1f}" if kind == "count" else f"{value:.4g}"


def _ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}×"


def _diff(difference: float, kind: str) -> str:
    if kind == "share":
        return f"{100 * difference:+.1f} pts"
    return f"{difference:+.3f}" if kind == "distance" else f"{difference:+,.1f}"


def _mime(data: bytes) -> str:
    """The image type from the first bytes: captions and keys say nothing reliable about it."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data[:4] == b"GIF8":
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"
