"""The review of box-level label issues (the cards :func:`curate_loop.runs.label_issues.find_label_issues` raised):
accept the fix, undo an accept, reject, or send for re-annotation with the fix as the pre-annotation.

Every decision is checked for every selected card before anything is written, and writes each field once (the
label field of the affected samples, the cards' decisions). The cards' saved view is saved again after each
decision: its patches are a snapshot that would still show the decided cards.
"""

from __future__ import annotations

import getpass
import json
import time

from curate_loop.errors import InvalidInputError
from curate_loop.runs.label_issues import (ACCEPTED, DISMISSED_FIELD, FIX_FIELD, ISSUES_FIELD, LOG_KEY, METHOD,
                                           REANNOTATE, REJECTED, REVIEWED, _parse_reviewed, save_issues_view)
from curate_loop.runs.mislabels import _fingerprint
from curate_loop.runs.pool import BATCH_FIELD, REASON_FIELD

CHANGED_BY, CHANGED_AT, FIXED, PREVIOUS = ("label_issue_changed_by", "label_issue_changed_at", "label_issue_fixed",
                                           "label_issue_previous")  # on a label an accept changed or added
REASON = "reannotate-label-issue"


# -- cards ---------------------------------------------------------------------------------------------------------
def _cards(dataset, issue_ids) -> list:
    """The cards ``issue_ids`` as ``(sample id, fo.Detection)``, in the order given; a clear error for none or for
    ids that are not cards."""
    issue_ids = [issue_ids] if isinstance(issue_ids, str) else list(dict.fromkeys(issue_ids or []))
    if not issue_ids:
        raise InvalidInputError("Select at least one issue card (in the label_issues view) to review.")
    if not dataset.has_field(ISSUES_FIELD):
        raise InvalidInputError(f"{dataset.name!r} has no label issues yet: run `curate-loop label-issues find "
                                f"{dataset.name}` first.")
    view = dataset.select_labels(ids=issue_ids, fields=ISSUES_FIELD)
    found = {}
    for sample_id, detections in zip(*view.values(["id", f"{ISSUES_FIELD}.detections"])):
        for card in detections or []:
            found[card.id] = (sample_id, card)
    unknown = [i for i in issue_ids if i not in found]
    if unknown:
        raise InvalidInputError(f"{len(unknown)} id(s) are not issue cards of {dataset.name!r}, e.g. {unknown[0]}; "
                                "re-run the scan if the cards were replaced since.")
    return [found[i] for i in issue_ids]


def _set_decision(dataset, card_ids: list, decision: str | None) -> None:
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z") if decision else None
    path = f"{ISSUES_FIELD}.detections"
    dataset.set_label_values(f"{path}.decision", {i: decision for i in card_ids}, dynamic=True)
    dataset.set_label_values(f"{path}.decided_at", {i: when for i in card_ids}, dynamic=True)
    save_issues_view(dataset)


def _open_only(cards: list, what: str) -> None:
    decided = [(c.id, c.decision) for _, c in cards if c.decision]
    if decided:
        raise InvalidInputError(f"{len(decided)} of the cards were decided already (e.g. {decided[0][0]}: "
                                f"{decided[0][1]}); {what} open cards only (undo an accept first).")


# -- the label field, edited per sample in one bulk write ----------------------------------------------------------
def _labels_of(dataset, label_field: str, sample_ids: list) -> dict:
    """sample id -> its list of ``fo.Detection`` in ``label_field`` (copies: edited, then written back)."""
    view = dataset.select(sample_ids)
    return {sid: list(dets.detections) if dets is not None else []
            for sid, dets in zip(*view.values(["id", label_field]))}


def _write_labels(dataset, field: str, labels_of: dict) -> None:
    import fiftyone as fo

    dataset.set_values(field, {sid: fo.Detections(detections=dets) for sid, dets in labels_of.items()},
                       key_field="id", dynamic=True)


def _target(card, dets: list):
    """Position and label of the card's target label in ``dets``; None when it is gone."""
    for index, det in enumerate(dets):
        if det.id == card.label_id:
            return index, det
    return None


def _apply_fix(card, dets: list, stamp: dict) -> tuple:
    """Apply the card's fix to ``dets`` in place (``stamp``: attributes for the changed or added label); returns
    ``(index, before, after)``, the label before and after as JSON (None: there was none / there is none)."""
    import fiftyone as fo

    if card.kind == "overlooked":
        added = fo.Detection(label=card.suggested_label, bounding_box=list(card.suggested_box), **stamp)
        dets.append(added)
        return len(dets) - 1, None, added.to_json()
    index, label = _target(card, dets)
    before = label.to_json()
    if card.kind in ("spurious", "duplicate"):
        del dets[index]
        return index, before, None
    if card.kind == "mislocated":
        previous = "[" + ", ".join(f"{v:.3f}" for v in label.bounding_box) + "]"
        label.bounding_box = list(card.suggested_box)
    else:  # swapped
        previous = label.label
        label.label = card.suggested_label
    for name, value in {**stamp, PREVIOUS: previous}.items():
        label[name] = value
    return index, before, label.to_json()


def _check_targets(cards: list, labels_of: dict) -> None:
    gone = [c.id for sid, c in cards if c.kind != "overlooked" and _target(c, labels_of[sid]) is None]
    if gone:
        raise InvalidInputError(f"{len(gone)} card(s) point at labels that no longer exist (e.g. card {gone[0]}); "
                                "re-run the scan.")


def _label_field_of(cards: list) -> str:
    fields = {c.label_field for _, c in cards}
    if len(fields) != 1:
        raise InvalidInputError(f"The selected cards are of several label fields {sorted(fields)}; review one field "
                                "at a time.")
    return fields.pop()


# -- accept and undo -----------------------------------------------------------------------------------------------
def _load_log(dataset) -> list:
    if LOG_KEY not in dataset.list_runs():
        return []
    return list(dataset.load_run_results(LOG_KEY, cache=False).serialize().get("entries") or [])


def _save_log(dataset, entries: list) -> None:
    if LOG_KEY not in dataset.list_runs():
        dataset.register_run(LOG_KEY, dataset.init_run(method=f"{METHOD}.reviews"), cleanup=False)
    dataset.save_run_results(LOG_KEY, dataset.init_run_results(LOG_KEY, entries=entries), overwrite=True)


def accept_issues(samples, issue_ids, *, changed_by: str | None = None) -> int:
    """Apply each card's fix to its label field exactly as suggested: an overlooked box becomes a new label, a
    mislocated label takes the suggested box, a spurious or duplicate label is deleted, a swapped one is relabeled.
    Who and when go on the changed label and, with the label before and after, into the log :func:`undo_issue`
    reads. Returns the number of cards accepted."""
    dataset = samples._root_dataset
    cards = _cards(dataset, issue_ids)
    _open_only(cards, "accept")
    label_field = _label_field_of(cards)
    labels_of = _labels_of(dataset, label_field, sorted({sid for sid, _ in cards}))
    _check_targets(cards, labels_of)
    who = changed_by or f"curate-loop label issue, accepted by {getpass.getuser()}"
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    log = _load_log(dataset)
    accept_no = max((e["accept_no"] for e in log), default=0) + 1
    for sample_id, card in cards:
        stamp = {FIXED: card.kind, CHANGED_BY: who, CHANGED_AT: when}
        index, before, after = _apply_fix(card, labels_of[sample_id], stamp)
        log.append({"issue_id": card.id, "accept_no": accept_no, "kind": card.kind, "sample_id": sample_id,
                    "label_field": label_field, "index": index, "before": before, "after": after, "by": who,
                    "at": when, "undone_at": None})
    _write_labels(dataset, label_field, labels_of)
    _save_log(dataset, log)
    _set_decision(dataset, [c.id for _, c in cards], ACCEPTED)
    return len(cards)


def undo_issue(dataset, issue_ids=None) -> int:
    """Restore the labels accepted cards changed exactly as they were (an added box goes, a deleted one comes back
    where it was, a moved or relabeled one gets its old box or class and attributes back) and reopen the cards.
    ``issue_ids`` None: the last accept (every card it took). Returns the number of accepts undone."""
    import fiftyone as fo

    dataset = dataset._root_dataset
    log = _load_log(dataset)
    live = [e for e in log if not e["undone_at"]]
    if issue_ids is None:
        if not live:
            raise InvalidInputError(f"No accepted label issue to undo on {dataset.name!r}.")
        last = max(e["accept_no"] for e in live)
        chosen = [e for e in live if e["accept_no"] == last]
    else:
        wanted = [issue_ids] if isinstance(issue_ids, str) else list(issue_ids)
        chosen = [e for e in live if e["issue_id"] in set(wanted)]
        missing = sorted(set(wanted) - {e["issue_id"] for e in chosen})
        if missing:
            raise InvalidInputError(f"{len(missing)} card(s) have no accept to undo (e.g. {missing[0]}): only "
                                    "accepted, not yet undone cards can be undone.")
    label_field = {e["label_field"] for e in chosen}
    if len(label_field) != 1:
        raise InvalidInputError(f"The accepts are of several label fields {sorted(label_field)}; undo one at a time.")
    label_field = label_field.pop()
    labels_of = _labels_of(dataset, label_field, sorted({e["sample_id"] for e in chosen}))
    for entry in sorted(chosen, key=lambda e: (e["accept_no"], e["index"]), reverse=True):  # last change first
        dets = labels_of[entry["sample_id"]]
        before = fo.Detection.from_json(entry["before"]) if entry["before"] else None
        after_id = json.loads(entry["after"])["_id"]["$oid"] if entry["after"] else None
        position = next((i for i, d in enumerate(dets) if d.id == after_id), None) if after_id else None
        if position is not None:
            del dets[position]
        if before is not None:
            dets.insert(min(entry["index"] if position is None else position, len(dets)), before)
    _write_labels(dataset, label_field, labels_of)
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for entry in chosen:
        entry["undone_at"] = when
    _save_log(dataset, log)
    has_cards = dataset.has_field(ISSUES_FIELD)
    existing = set(dataset.values(f"{ISSUES_FIELD}.detections.id", unwind=True)) if has_cards else set()
    reopen = [e["issue_id"] for e in chosen if e["issue_id"] in existing]
    if reopen:
        _set_decision(dataset, reopen, None)
    return len(chosen)


# -- reject and re-annotate ----------------------------------------------------------------------------------------
def _dismiss(dataset, cards: list) -> None:
    """Keep the cards' suspects from being raised again while unchanged: the label's fingerprint with the kinds
    dismissed (``label_issue_reviewed``), or for an overlooked box the predicted region on its sample."""
    label_cards = [c for _, c in cards if c.kind != "overlooked"]
    if label_cards:
        field = label_cards[0].label_field
        path = f"{field}.detections"
        view = dataset.select_labels(ids=[c.label_id for c in label_cards], fields=field)
        names = ["id", "label", "bounding_box"] + ([REVIEWED] if dataset.has_field(f"{path}.{REVIEWED}") else [])
        rows = view.values([f"{path}.{n}" for n in names])
        current = {row[0]: row for sample in zip(*rows) for row in zip(*[column or [] for column in sample])}
        reviewed = {}
        for card in label_cards:
            _, label, box, *old = current[card.label_id]
            fingerprint = _fingerprint(label, box)
            kinds, kept = _parse_reviewed(reviewed.get(card.label_id) or (old[0] if old else None))
            kinds = (kinds if kept == fingerprint else set()) | {card.kind}
            reviewed[card.label_id] = ",".join(sorted(kinds)) + "|" + fingerprint
        dataset.set_label_values(f"{path}.{REVIEWED}", reviewed, dynamic=True)
    regions = {}
    for sample_id, card in cards:
        if card.kind == "overlooked":
            regions.setdefault(sample_id, []).append(f"{card.suggested_label}|" + ",".join(
                f"{v:.6f}" for v in card.suggested_box))
    if regions:
        view = dataset.select(sorted(regions))
        old = dict(zip(*view.values(["id", DISMISSED_FIELD]))) if dataset.has_field(DISMISSED_FIELD) else {}
        dataset.set_values(DISMISSED_FIELD, {sid: list(old.get(sid) or []) + new for sid, new in regions.items()},
                           key_field="id")


def reject_issues(samples, issue_ids) -> int:
    """Mark the cards "not an error": their suspects are not raised again until the label changes (its class or
    box; for an overlooked box, until a prediction of another class or place appears). Returns the cards rejected."""
    dataset = samples._root_dataset
    cards = _cards(dataset, issue_ids)
    _open_only(cards, "reject")
    _label_field_of(cards)
    labels_of = _labels_of(dataset, cards[0][1].label_field, sorted({sid for sid, _ in cards}))
    _check_targets(cards, labels_of)
    _dismiss(dataset, cards)
    _set_decision(dataset, [c.id for _, c in cards], REJECTED)
    return len(cards)


def send_issues_for_reannotation(samples, issue_ids, batch_name: str | None = None) -> int:
    """Queue the cards' samples in re-annotation batch ``batch_name`` (default: the loop manifest's
    ``mislabels.reannotate_batch``, else "reannotate") and write each sample's labels with the fixes of all its
    re-annotation cards applied to ``label_issue_fix``, the pre-annotation a push sends (see the module docstring of
    :mod:`curate_loop.runs.label_issues`). The suspects are not raised again while the labels are unchanged.
    Returns the number of samples in the batch."""
    import fiftyone as fo
    from fiftyone import ViewField as F

    dataset = samples._root_dataset
    if batch_name is None:
        from curate_loop.loop.runner import reannotate_batch_name

        batch_name = reannotate_batch_name(dataset)
    if not isinstance(batch_name, str) or not batch_name.isidentifier():
        raise InvalidInputError(f"Invalid batch name {batch_name!r}: use letters, digits and underscores.")
    cards = _cards(dataset, issue_ids)
    _open_only(cards, "send")
    label_field = _label_field_of(cards)
    sample_ids = sorted({sid for sid, _ in cards})
    labels_of = _labels_of(dataset, label_field, sample_ids)
    _check_targets(cards, labels_of)
    _dismiss(dataset, cards)
    _set_decision(dataset, [c.id for _, c in cards], REANNOTATE)
    fixed = {sid: [fo.Detection.from_json(d.to_json()) for d in dets] for sid, dets in labels_of.items()}
    all_cards = dataset.select(sample_ids).values(["id", f"{ISSUES_FIELD}.detections"])
    for sample_id, sample_cards in zip(*all_cards):
        for card in sample_cards or []:
            if card.decision == REANNOTATE and (card.kind == "overlooked" or _target(card, fixed[sample_id])):
                _apply_fix(card, fixed[sample_id], {FIXED: card.kind})
    _write_labels(dataset, FIX_FIELD, fixed)
    dataset.set_values(BATCH_FIELD, {i: batch_name for i in sample_ids}, key_field="id")
    dataset.set_values(REASON_FIELD, {i: REASON for i in sample_ids}, key_field="id")
    dataset.save_view(batch_name, dataset.match(F(BATCH_FIELD) == batch_name), overwrite=True)
    return len(dataset.match(F(BATCH_FIELD) == batch_name))


# -- what an App selection means -----------------------------------------------------------------------------------
def issue_ids_of_selection(view, *, selected_labels=(), selected_samples=()) -> list[str]:
    """The card ids an App selection means: cards selected in the modal (or the label a card points at), else the
    patches selected in the grid of the ``label_issues`` view (a patch's id is its card's id), else the open cards
    of the selected samples."""
    root = view._root_dataset
    if not root.has_field(ISSUES_FIELD):
        return []
    chosen = [s["label_id"] for s in selected_labels or [] if s.get("field") == ISSUES_FIELD]
    targets = {s["label_id"] for s in selected_labels or [] if s.get("field") not in (None, ISSUES_FIELD)}
    if targets:
        ids, label_ids, decisions = root.values([f"{ISSUES_FIELD}.detections.{n}" for n in ("id", "label_id",
                                                                                              "decision")], unwind=True)
        chosen += [i for i, t, d in zip(ids, label_ids, decisions) if t in targets and not d]
    if chosen or not selected_samples:
        return list(dict.fromkeys(chosen))
    selected = [str(i) for i in selected_samples]
    if view._is_patches:
        found = view.select(selected).values(f"{ISSUES_FIELD}.id")
    else:
        found = _open_cards(view.select(selected))
    # the App can send a patches grid's selection with another view (its state lags behind the grid after a reload):
    # ids that are not items of ``view`` are looked up as cards, then as samples of the dataset
    rest = sorted(set(selected) - set(view.select(selected).values("id")))
    if rest:
        found = list(found) + [i for i in root.select_labels(ids=rest, fields=ISSUES_FIELD).values(
            f"{ISSUES_FIELD}.detections.id", unwind=True) if i in set(rest)]
        found += _open_cards(root.select(rest))
    return [i for i in dict.fromkeys(found) if i is not None]


def _open_cards(samples) -> list:
    ids, decisions = samples.values([f"{ISSUES_FIELD}.detections.id", f"{ISSUES_FIELD}.detections.decision"],
                                    unwind=True)
    return [i for i, d in zip(ids, decisions) if not d]
