"""Mislabel detection on a FiftyOne dataset and the QA review flow: the glue around :mod:`curate_loop.mislabels`.

Results live on the labels themselves, so the App can filter and sort by them:

- ``mislabel_score`` (0..1, higher = more likely wrong), ``mislabel_suggestion`` and ``mislabel_confidence``;
- ``mislabel_suspect``: raised for review (score high and another class suggested, not rejected before);
- review decisions as label tags, ``mislabel:accepted``, ``mislabel:rejected``, ``mislabel:reannotate``, plus
  who/what changed a label (``mislabel_previous``, ``mislabel_changed_by``, ``mislabel_changed_at``).

Every review decision keeps a fingerprint of the label as decided (class and box, ``mislabel_reviewed``): a re-run
does not raise a rejected, accepted or re-annotated label again unless its class or box changed since (a pull from
Label Studio, a hand edit); a changed one loses its decision tag and is scored and raised like any other. Labels
accepted or re-annotated before fingerprints were kept adopt their current fingerprint on the next scan. Each sample gets the highest score of its labels (``mislabel_max``); the run records the
estimated noise per class pair; the saved view ``mislabel_suspects`` lists suspects best-first (object patches
for Detections). Everything is computed before anything is written.
"""

from __future__ import annotations

import getpass
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from curate_loop.errors import InvalidInputError
from curate_loop.runs.bulk import set_sample_fields
from curate_loop.runs.embeddings import Progress, embedding_config, load_embeddings
from curate_loop.runs.pool import BATCH_FIELD, REASON_FIELD, label_kind

METHOD = "curate_loop.mislabels"
SUSPECTS_VIEW = "mislabel_suspects"
SUSPECTS_DESCRIPTION = "Mislabel suspects of "  # + the label field: a review re-saves the view of its own field only
SUSPECT_MIN_SCORE = 0.5  # raised for review from here (and only when another class is suggested)
TAG_ACCEPTED, TAG_REJECTED, TAG_REANNOTATE = "mislabel:accepted", "mislabel:rejected", "mislabel:reannotate"
SCORE, SUGGESTION, CONFIDENCE, SUSPECT = "mislabel_score", "mislabel_suggestion", "mislabel_confidence", "mislabel_suspect"
REVIEWED = "mislabel_reviewed"  # fingerprint of the label when a reviewer decided on it
REANNOTATE_BATCH = "reannotate"  # the re-annotation batch when no manifest names one (mislabels.reannotate_batch)


@dataclass
class MislabelSummary:
    label_field: str
    embeddings_key: str
    scored: int
    suspects: int
    still_rejected: int  # rejected before and unchanged: not raised again
    without_vectors: int
    unscorable: int
    noise_rates: list  # [{"given", "true", "rate"}, ...] largest first
    view_name: str
    seconds: float = 0.0
    top: list = field(default_factory=list)  # [(label id, score, given, suggested)]
    still_handled: int = 0  # accepted or re-annotated before and unchanged: not raised again
    reopened: int = 0  # decided on before (any decision) but changed since: tag dropped, raised again if suspect

    def to_dict(self) -> dict:
        return asdict(self)


def run_key(label_field: str) -> str:
    return f"mislabels_{label_field}"


# -- reading labels ------------------------------------------------------------------------------------------------
@dataclass
class _Labels:
    ids: np.ndarray  # label ids
    sample_ids: np.ndarray
    classes: np.ndarray  # object array of str
    fingerprints: np.ndarray  # object array of str
    tags: list
    reviewed: np.ndarray  # object array: fingerprint at the review decision, or None


def _label_kind(samples, label_field: str) -> str:
    return label_kind(samples, label_field, needed_for="; mislabel detection needs one of them.")


def _prefix(label_field: str, kind: str) -> str:
    return f"{label_field}.detections" if kind == "detections" else label_field


def _read_labels(samples, label_field: str, kind: str) -> _Labels:
    prefix = _prefix(label_field, kind)
    paths = ["id", f"{prefix}.id", f"{prefix}.label", f"{prefix}.tags", f"{prefix}.{REVIEWED}"]
    if kind == "detections":
        paths.append(f"{prefix}.bounding_box")
    has_reviewed = samples.has_field(f"{prefix}.{REVIEWED}")
    if not has_reviewed:
        paths.remove(f"{prefix}.{REVIEWED}")
    values = dict(zip(paths, samples.values(paths)))

    def flat(path):
        rows = values[path]
        if kind == "classification":
            return [v for v, i in zip(rows, values[f"{prefix}.id"]) if i is not None]
        return [v for row, ids in zip(rows, values[f"{prefix}.id"]) for v in (row or [])[:len(ids or [])]]

    label_ids = flat(f"{prefix}.id")
    sample_ids = ([s for s, i in zip(values["id"], values[f"{prefix}.id"]) if i is not None] if kind == "classification"
                  else [s for s, ids in zip(values["id"], values[f"{prefix}.id"]) for _ in (ids or [])])
    classes = flat(f"{prefix}.label")
    boxes = flat(f"{prefix}.bounding_box") if kind == "detections" else [None] * len(label_ids)
    reviewed = flat(f"{prefix}.{REVIEWED}") if has_reviewed else [None] * len(label_ids)
    return _Labels(ids=np.asarray(label_ids, dtype=str), sample_ids=np.asarray(sample_ids, dtype=str),
                   classes=np.asarray(classes, dtype=object),
                   fingerprints=np.asarray([_fingerprint(c, b) for c, b in zip(classes, boxes)], dtype=object),
                   tags=[t or [] for t in flat(f"{prefix}.tags")], reviewed=np.asarray(reviewed, dtype=object))


def _fingerprint(label, box) -> str:
    """What a reviewer saw: the class, and the box rounded to a tenth of a percent of the image."""
    return f"{label}|" + ("" if box is None else ",".join(f"{v:.3f}" for v in box))


# -- detection -----------------------------------------------------------------------------------------------------
def find_mislabels(samples, label_field: str = "ground_truth", embeddings_key: str = "clip", *, seed: int = 0,
                   progress: Progress | None = None) -> MislabelSummary:
    """Score every label of ``label_field`` in ``samples`` (object embeddings for Detections, image embeddings for
    a Classification) and raise the likely mislabels for review."""
    from curate_loop.mislabels import detect_mislabels

    started = time.perf_counter()
    step = progress or (lambda fraction, label: None)
    dataset = samples._dataset
    kind = _label_kind(samples, label_field)
    config = embedding_config(dataset, embeddings_key)
    if kind == "detections" and config.get("patches_field") != label_field:
        raise InvalidInputError(f"Embeddings {embeddings_key!r} are not of the boxes of {label_field!r}. Compute them "
                                f"with `curate-loop embed compute {dataset.name} --key {label_field}_boxes "
                                f"--objects {label_field}` and pass that key.")
    if kind == "classification" and config.get("patches_field"):
        raise InvalidInputError(f"{label_field!r} labels whole images: pass the key of an image embeddings run.")
    step(0.05, "reading labels and vectors")
    labels = _read_labels(samples, label_field, kind)
    if not len(labels.ids):
        raise InvalidInputError(f"No labels in {label_field!r} in this view: nothing to check.")
    item_ids, vectors = load_embeddings(samples, embeddings_key)
    row_of = {i: r for r, i in enumerate(item_ids.tolist())}
    keys = labels.ids if kind == "detections" else labels.sample_ids
    has_vector = np.fromiter((k in row_of for k in keys.tolist()), dtype=bool, count=len(keys))
    has_class = np.asarray([c is not None for c in labels.classes], dtype=bool)
    usable = has_vector & has_class
    if usable.sum() < 3:
        raise InvalidInputError(f"Only {int(usable.sum())} labels of {label_field!r} have a class and a vector in "
                                f"{embeddings_key!r}; compute the embeddings for this view first.")
    rows = np.fromiter((row_of[k] for k in keys[usable].tolist()), dtype=np.int64, count=int(usable.sum()))
    step(0.2, f"scoring {int(usable.sum())} labels")
    result = detect_mislabels(vectors[rows], labels.classes[usable].astype(str), seed=seed)

    n = len(labels.ids)
    score = np.full(n, np.nan)
    score[usable] = result.score
    suggestion = np.full(n, None, dtype=object)
    suggestion[usable] = np.asarray(result.suggested, dtype=object)
    confidence = np.full(n, np.nan)
    confidence[usable] = result.suggested_confidence
    rejected = np.asarray([TAG_REJECTED in tags for tags in labels.tags], dtype=bool)
    handled = np.asarray([TAG_ACCEPTED in t or TAG_REANNOTATE in t for t in labels.tags], dtype=bool)
    unchanged = labels.reviewed == labels.fingerprints
    adopted = handled & (labels.reviewed == None)  # noqa: E711 (decided before fingerprints were kept)
    still_rejected = rejected & unchanged
    still_handled = handled & (unchanged | adopted)
    suspect = usable & (np.nan_to_num(score) >= SUSPECT_MIN_SCORE) & (suggestion != labels.classes)
    suspect &= ~still_rejected & ~still_handled
    stale = (rejected | handled) & ~still_rejected & ~still_handled  # changed since the decision: review it again

    step(0.8, "writing scores")
    prefix = _prefix(label_field, kind)
    ids = labels.ids.tolist()

    def put(attribute, values):
        dataset.set_label_values(f"{prefix}.{attribute}", dict(zip(ids, values)), dynamic=True)

    put(SCORE, [None if np.isnan(s) else round(float(s), 6) for s in score])
    put(SUGGESTION, suggestion.tolist())
    put(CONFIDENCE, [None if np.isnan(c) else round(float(c), 6) for c in confidence])
    put(SUSPECT, suspect.tolist())
    if adopted.any():
        dataset.set_label_values(f"{prefix}.{REVIEWED}", dict(zip(labels.ids[adopted].tolist(),
                                                                  labels.fingerprints[adopted].tolist())), dynamic=True)
    if stale.any():
        samples.select_labels(ids=labels.ids[stale].tolist(), fields=label_field).untag_labels(
            [TAG_ACCEPTED, TAG_REJECTED, TAG_REANNOTATE], label_fields=label_field)
    _write_sample_summary(samples, labels.sample_ids, score, suspect)
    _save_suspects_view(dataset, label_field, kind)
    order = np.argsort(-np.nan_to_num(score, nan=-1.0), kind="stable")[:10]
    summary = MislabelSummary(
        label_field=label_field, embeddings_key=embeddings_key, scored=int(usable.sum()), suspects=int(suspect.sum()),
        still_rejected=int(still_rejected.sum()), without_vectors=int((~has_vector).sum()),
        unscorable=int((~has_class).sum()), noise_rates=list(getattr(result, "noise_rates", []))[:20],
        view_name=SUSPECTS_VIEW, seconds=round(time.perf_counter() - started, 2),
        still_handled=int(still_handled.sum()), reopened=int(stale.sum()),
        top=[[ids[i], float(np.nan_to_num(score[i])), labels.classes[i], suggestion[i]] for i in order],
    )
    key = run_key(label_field)
    run_config = dataset.init_run(method=METHOD, label_field=label_field, embeddings_key=embeddings_key, seed=seed)
    dataset.register_run(key, run_config, overwrite=True, cleanup=False)
    results = summary.to_dict()
    results["detector"] = result.to_dict() if hasattr(result, "to_dict") else {}
    dataset.save_run_results(key, dataset.init_run_results(key, **_jsonable(results)), overwrite=True)
    step(1.0, f"{summary.suspects} suspects")
    return summary


def _write_sample_summary(samples, sample_ids: np.ndarray, score: np.ndarray, suspect: np.ndarray) -> None:
    """``mislabel_max`` and ``mislabel_suspects`` per sample, for sorting images in the grid."""
    best, count = {}, {}
    for sample_id, s, flagged in zip(sample_ids.tolist(), score.tolist(), suspect.tolist()):
        if s == s:  # not NaN
            best[sample_id] = max(best.get(sample_id, 0.0), round(s, 6))
        count[sample_id] = count.get(sample_id, 0) + int(flagged)
    all_ids = samples.values("id")
    set_sample_fields(samples, all_ids, {"mislabel_max": [best.get(i) for i in all_ids],
                                         "mislabel_suspects": [count.get(i, 0) for i in all_ids]})


def _save_suspects_view(dataset, label_field: str, kind: str) -> None:
    from fiftyone import ViewField as F

    if kind == "detections":
        view = (dataset.filter_labels(label_field, F(SUSPECT) == True, only_matches=True)  # noqa: E712 (MongoDB)
                .to_patches(label_field).sort_by(F(f"{label_field}.{SCORE}"), reverse=True))
    else:
        view = dataset.match(F(f"{label_field}.{SUSPECT}") == True).sort_by(  # noqa: E712 (MongoDB)
            F(f"{label_field}.{SCORE}"), reverse=True)
    dataset.save_view(SUSPECTS_VIEW, view, description=f"{SUSPECTS_DESCRIPTION}{label_field}", overwrite=True)


def _suspects_view_field(dataset) -> str | None:
    """The label field whose suspects the saved suspects view shows (None without one)."""
    if not dataset.has_saved_view(SUSPECTS_VIEW):
        return None
    description = dataset.get_saved_view_info(SUSPECTS_VIEW).get("description") or ""
    return description.removeprefix(SUSPECTS_DESCRIPTION) if description.startswith(SUSPECTS_DESCRIPTION) else None


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- the review flow -----------------------------------------------------------------------------------------------
def accept_suggestions(samples, label_field: str, label_ids, *, changed_by: str | None = None) -> int:
    """Relabel each label to its suggested class; records the previous class, who/what changed it and when."""
    kind = _label_kind(samples, label_field)
    labels = _selected(samples, label_field, kind, label_ids)
    prefix = _prefix(label_field, kind)
    dataset = samples._dataset
    suggestions = dict(zip(*dataset.select_labels(ids=labels.ids.tolist(), fields=label_field).values(
        [f"{prefix}.id", f"{prefix}.{SUGGESTION}"], unwind=True)))
    missing = [i for i in labels.ids.tolist() if not suggestions.get(i)]
    if missing:
        raise InvalidInputError(f"{len(missing)} of the labels have no suggestion (e.g. {missing[0]}); run mislabel "
                                "detection first, or relabel them by hand.")
    who = changed_by or f"curate-loop suggestion, accepted by {getpass.getuser()}"
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    ids = labels.ids.tolist()
    dataset.set_label_values(f"{prefix}.mislabel_previous", dict(zip(ids, labels.classes.tolist())), dynamic=True)
    dataset.set_label_values(f"{prefix}.mislabel_changed_by", {i: who for i in ids}, dynamic=True)
    dataset.set_label_values(f"{prefix}.mislabel_changed_at", {i: when for i in ids}, dynamic=True)
    dataset.set_label_values(f"{prefix}.label", {i: suggestions[i] for i in ids})
    _close(dataset, label_field, kind, ids, TAG_ACCEPTED)
    return len(ids)


def reject_suspects(samples, label_field: str, label_ids) -> int:
    """Mark the labels "not a mislabel": they are not raised again unless their class or box changes."""
    kind = _label_kind(samples, label_field)
    labels = _selected(samples, label_field, kind, label_ids)
    _close(samples._dataset, label_field, kind, labels.ids.tolist(), TAG_REJECTED)
    return len(labels.ids)


def send_for_reannotation(samples, label_field: str, label_ids, batch_name: str | None = None) -> int:
    """Tag the labels for re-annotation and queue their samples in batch ``batch_name`` (a saved view of that
    name), which the Label Studio push takes; returns the number of samples in the batch.

    ``batch_name`` defaults to the ``mislabels.reannotate_batch`` of the manifest that drives the dataset's loop
    (the batch `curate-loop run` and "Push pending batches" push), else ``REANNOTATE_BATCH``."""
    from fiftyone import ViewField as F

    if batch_name is None:
        from curate_loop.loop.runner import reannotate_batch_name

        batch_name = reannotate_batch_name(samples._dataset)
    if not isinstance(batch_name, str) or not batch_name.isidentifier():
        raise InvalidInputError(f"Invalid batch name {batch_name!r}: use letters, digits and underscores.")
    kind = _label_kind(samples, label_field)
    labels = _selected(samples, label_field, kind, label_ids)
    dataset = samples._dataset
    _close(dataset, label_field, kind, labels.ids.tolist(), TAG_REANNOTATE)
    sample_ids = sorted(set(labels.sample_ids.tolist()))
    set_sample_fields(dataset, sample_ids, {BATCH_FIELD: [batch_name] * len(sample_ids),
                                            REASON_FIELD: ["reannotate-mislabel"] * len(sample_ids)})
    dataset.save_view(batch_name, dataset.match(F(BATCH_FIELD) == batch_name), overwrite=True)
    return len(dataset.match(F(BATCH_FIELD) == batch_name))


def _selected(samples, label_field: str, kind: str, label_ids) -> _Labels:
    label_ids = [label_ids] if isinstance(label_ids, str) else list(label_ids or [])
    if not label_ids:
        raise InvalidInputError("Select at least one label (a suspect) to review.")
    view = samples._dataset.select_labels(ids=label_ids, fields=label_field)
    labels = _read_labels(view, label_field, kind)
    unknown = set(label_ids) - set(labels.ids.tolist())
    if unknown:
        raise InvalidInputError(f"{len(unknown)} id(s) are not labels of {label_field!r}, e.g. {sorted(unknown)[0]}.")
    return labels


def _close(dataset, label_field: str, kind: str, ids: list, tag: str) -> None:
    """A review decision: the decision's tag (replacing earlier ones), no longer a suspect, and the fingerprint of
    the label as decided (read after any relabel), so a later change of its class or box reopens it."""
    prefix = _prefix(label_field, kind)
    view = dataset.select_labels(ids=ids, fields=label_field)
    view.untag_labels([TAG_ACCEPTED, TAG_REJECTED, TAG_REANNOTATE], label_fields=label_field)
    view.tag_labels(tag, label_fields=label_field)
    dataset.set_label_values(f"{prefix}.{SUSPECT}", {i: False for i in ids}, dynamic=True)
    decided = _read_labels(view, label_field, kind)
    dataset.set_label_values(f"{prefix}.{REVIEWED}", dict(zip(decided.ids.tolist(), decided.fingerprints.tolist())),
                             dynamic=True)
    if _suspects_view_field(dataset) == label_field:  # saved again: its patches are a snapshot that would still show them
        _save_suspects_view(dataset, label_field, kind)


def label_ids_of_selection(view, label_field: str, *, selected_labels=(), selected_samples=()) -> list[str]:
    """The label ids an App selection means: labels selected in the modal, else the patches (or samples) selected
    in the grid of the suspects view."""
    ids = [s["label_id"] for s in selected_labels or [] if s.get("field") == label_field]
    if ids or not selected_samples:
        return ids
    selected = [str(i) for i in selected_samples]
    chosen = view.select(selected)
    kind = _label_kind(view._root_dataset, label_field)
    if view._is_patches or kind == "classification":  # one label per grid item
        values = chosen.values(f"{label_field}.id")
    else:
        values = chosen.values(f"{label_field}.detections.id", unwind=True)
    # A patch's id is its label's id. The App can send a patches grid's selection with another view (its state lags
    # behind the grid after a reload), so ids that are not items of ``view`` are looked up as labels of the dataset.
    rest = sorted(set(selected) - set(chosen.values("id")))
    if rest:
        path = f"{label_field}.id" if kind == "classification" else f"{label_field}.detections.id"
        found = view._root_dataset.select_labels(ids=rest, fields=label_field).values(
            path, unwind=kind != "classification")
        values = list(values) + [i for i in found if i in set(rest)]
    return [i for i in values if i is not None]


def top_suspects(dataset, label_field: str, limit: int = 20) -> list[dict]:
    """The open suspects of the last scan, best first: label and sample ids, score, given and suggested class.
    Empty when ``label_field`` was never scanned."""
    if run_key(label_field) not in dataset.list_runs() or not dataset.has_saved_view(SUSPECTS_VIEW):
        return []
    view = dataset.load_saved_view(SUSPECTS_VIEW).limit(limit)
    rows = view.values([f"{label_field}.id", "sample_id" if view._is_patches else "id",
                        f"{label_field}.{SCORE}", f"{label_field}.label", f"{label_field}.{SUGGESTION}"])
    keys = ("label_id", "sample_id", "score", "given", "suggested")
    return [dict(zip(keys, row)) for row in zip(*rows)]


def noise_report(dataset, label_field: str) -> dict:
    """The last run's counts and estimated noise per class pair."""
    key = run_key(label_field)
    if key not in dataset.list_runs():
        raise InvalidInputError(f"No mislabel run for {label_field!r} on {dataset.name!r}; run "
                                f"`curate-loop mislabels find {dataset.name} --label-field {label_field}` first.")
    return dataset.load_run_results(key, cache=False).serialize()
