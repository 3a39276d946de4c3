"""One iteration of the active-learning loop, as ``curate-loop run manifest.yml`` runs it:

    pull finished batches -> embed what is new -> quality checks -> model step -> mislabel scan -> curate the next
                                                                     batch -> push it -> push the re-annotation batch

The quality checks (manifest ``quality:``, off by default) measure the samples not measured yet and apply the
manifest's choice per issue (:mod:`curate_loop.runs.quality`): samples flagged with an ``exclude`` issue never enter
a batch, and the Label Studio tasks of samples flagged with a ``flag`` issue show it.

The model step (manifest ``model:``, optional) trains or runs the model on the labels and writes its predictions
for the pool (:mod:`curate_loop.runs.model_step`); curation then combines diversity with the model's uncertainty
and predicted classes (``curation.*`` strengths), and the push sends the predictions as pre-annotations for samples
without labels (``labelstudio.pre_annotations``). Without a model section: diversity alone, no model regions.

Every step is idempotent, so a crash anywhere is repaired by running again: a pull applies only what changed
since the last one, embeddings add only missing vectors (and re-embed boxes that moved), a batch that this loop
already picked for this iteration is reused rather than picked again, and a push imports only missing tasks. The
iteration is recorded in the loop history (a run on the dataset, ``loop_history``) once it has completed.

The loop only reuses batches it created itself: before picking, it records the batch name it claims for the
iteration (``batches`` in the history run). A batch of that name picked by someone else (by hand in the App, whose
form suggests ``batch_NN`` too) is left as it is, and the loop picks its own batch under a free name, saying why.

Samples sent for re-annotation (``mislabels.reannotate_batch``) are pushed as one more batch whenever some of
them have no task yet, and pulled back like any batch; relabeled or moved boxes are then scored again.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from curate_loop.errors import InvalidInputError
from curate_loop.loop.manifest import Manifest
from curate_loop.runs.embeddings import Progress

HISTORY_KEY = "loop_history"
HISTORY_METHOD = "curate_loop.loop"


@dataclass
class IterationSummary:
    iteration: int
    batch: str
    pulled: dict = field(default_factory=dict)  # batch -> counts of what the pull changed
    embedded: int = 0
    quality: dict | None = None  # the quality checks: measured, unreadable, flagged per issue, excluded; None when off
    model: dict | None = None  # the model step (ModelStepRecord.to_dict()); None without a model section
    batch_mode: str | None = None  # how the batch was picked: "combined", or "diversity only: <why>"
    batch_contributions: dict = field(default_factory=dict)  # what each objective contributed (BatchSummary)
    suspects: int | None = None
    label_issues: int | None = None  # box-level label issues raised (needs the model step's predictions)
    selected: int = 0
    reused_batch: bool = False
    pushed: int = 0
    reannotate_batch: str | None = None  # the re-annotation batch, when this iteration pushed some of it
    reannotate_pushed: int = 0  # new re-annotation tasks
    notes: list = field(default_factory=list)  # why the loop did something unexpected (e.g. renamed its batch)
    notices: list = field(default_factory=list)  # random_weights_notice lines of the embeddings this iteration used
    simulated_answers: int = 0
    report_path: str | None = None  # the batch's curation report
    loop_report_path: str | None = None  # the iteration report (saturation curve, label changes)
    mislabel_decisions: dict = field(default_factory=dict)  # running totals of reviewers' decisions
    manifest_path: str | None = None
    started_at: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _history_results(dataset):
    """The history run's results (``iterations``, ``batches``), or None before the first iteration."""
    if HISTORY_KEY not in dataset.list_runs():
        return None
    return dataset.load_run_results(HISTORY_KEY, cache=False)


def history(dataset) -> list[dict]:
    results = _history_results(dataset)
    return list(getattr(results, "iterations", None) or [])


def loop_batches(dataset) -> dict[int, dict]:
    """iteration -> ``{"batch", "claimed_at"}``: the batch names this loop claimed (before picking them). Iterations
    recorded before claims were kept count as claims made at time 0: their batches are the loop's."""
    results = _history_results(dataset)
    claims = {int(k): dict(v) for k, v in (getattr(results, "batches", None) or {}).items()}
    for it in getattr(results, "iterations", None) or []:
        claims.setdefault(int(it["iteration"]), {"batch": it["batch"], "claimed_at": 0.0})
    return claims


def _save_history(dataset, *, iterations: list[dict] | None = None, batches: dict[int, dict] | None = None) -> None:
    """Rewrite the history run, replacing the parts given."""
    saved = _history_results(dataset)
    if HISTORY_KEY not in dataset.list_runs():
        dataset.register_run(HISTORY_KEY, dataset.init_run(method=HISTORY_METHOD), cleanup=False)
    if iterations is None:
        iterations = list(getattr(saved, "iterations", None) or [])
    batches = (getattr(saved, "batches", None) or {}) if batches is None else {str(k): v for k, v in batches.items()}
    dataset.save_run_results(HISTORY_KEY, dataset.init_run_results(HISTORY_KEY, iterations=iterations,
                                                                   batches=batches), overwrite=True)


def _record(dataset, summary: IterationSummary) -> None:
    """Store the iteration in the history and rewrite the loop report, which reads that history."""
    summary.mislabel_decisions = _mislabel_decisions(dataset)
    summary.seconds = round(time.time() - summary.started_at, 2)
    summary.loop_report_path = str(loop_report_path(dataset))
    iterations = [it for it in history(dataset) if it["iteration"] != summary.iteration] + [summary.to_dict()]
    _save_history(dataset, iterations=iterations)
    write_loop_report(dataset)


def _claim_batch(dataset, manifest: Manifest, iteration: int) -> tuple[str, list[str]]:
    """This iteration's batch name, claimed in the history before anything is picked, and notes for the user.

    A crashed run's claim is kept (its batch, if picked, is reused). Otherwise the manifest's name, unless something
    else holds it (a batch picked by hand, a saved view, a re-annotation batch): then that one is left alone and the
    loop takes ``<name>_loop`` (or ``_loop2``, ...)."""
    claims = loop_batches(dataset)
    taken = _taken_names(dataset)
    claim = claims.get(iteration)
    if claim and (claim["batch"] not in taken or _created_by_loop(dataset, claim)):
        return claim["batch"], []
    wanted = manifest.batch_name(iteration)
    name, n = wanted, 1
    while name in taken or any(c["batch"] == name for c in claims.values()):
        name, n = f"{wanted}_loop{n if n > 1 else ''}", n + 1
    notes = []
    if name != wanted:
        notes.append(f"{wanted!r} already exists and was not picked by this loop (picked by hand, e.g. in the App): "
                     f"left as it is (not reused, not pushed); this iteration's batch is {name!r}. Push {wanted!r} "
                     f"yourself (`curate-loop push {dataset.name} {wanted}`) if it should be labeled.")
    claims[iteration] = {"batch": name, "claimed_at": time.time()}
    _save_history(dataset, batches=claims)
    return name, notes


def _taken_names(dataset) -> set[str]:
    """Names a new batch must not take: runs, saved views and batch names already on samples."""
    from curate_loop.runs.pool import BATCH_FIELD

    names = set(dataset.list_runs()) | set(dataset.list_saved_views())
    if dataset.has_field(BATCH_FIELD):
        names |= {b for b in dataset.distinct(BATCH_FIELD) if b}
    return names


def _created_by_loop(dataset, claim: dict) -> bool:
    """Whether the batch of ``claim`` was picked after the loop claimed its name (so by the loop)."""
    from curate_loop.runs.curation import METHOD

    if claim["batch"] not in dataset.list_runs(method=METHOD):
        return False
    created_at = getattr(dataset.load_run_results(claim["batch"], cache=False), "created_at", 0.0) or 0.0
    return created_at >= claim["claimed_at"]


def loop_report_path(dataset):
    from curate_loop.runs.report import report_path

    return report_path(dataset, "loop")


def write_loop_report(dataset):
    """(Re)write the iteration report from the history and the batches' saturation; returns its path."""
    from curate_loop.curation.report_html import write_report
    from curate_loop.loop.report import render_loop_report
    from curate_loop.runs.curation import saturation_history

    html = render_loop_report(sorted(history(dataset), key=lambda it: it["iteration"]), saturation_history(dataset),
                              dataset_name=dataset.name)
    return write_report(html, loop_report_path(dataset))


def _mislabel_decisions(dataset) -> dict:
    """How many labels carry each review tag now (running totals; the report shows each iteration's share)."""
    from curate_loop.runs.mislabels import TAG_ACCEPTED, TAG_REANNOTATE, TAG_REJECTED

    counts = dataset.count_label_tags()
    return {"accepted": counts.get(TAG_ACCEPTED, 0), "rejected": counts.get(TAG_REJECTED, 0),
            "reannotate": counts.get(TAG_REANNOTATE, 0)}


def run_iteration(manifest: Manifest, *, simulate_annotator: bool = False, truth_field: str = "true_ground_truth",
                  url: str | None = None, api_key: str | None = None, crash_after: str | None = None,
                  progress: Progress | None = None) -> IterationSummary:
    """One loop iteration for ``manifest``; ``crash_after`` (a step name) stops there, for crash-recovery tests."""
    from curate_loop.runs.datasets import open_dataset

    step = progress or (lambda fraction, label: None)
    dataset = open_dataset(manifest.dataset)
    done = history(dataset)
    iteration = (max(it["iteration"] for it in done) + 1) if done else 1
    batch, notes = _claim_batch(dataset, manifest, iteration)
    summary = IterationSummary(iteration=iteration, batch=batch, started_at=time.time(),
                               manifest_path=manifest.source, notes=notes)
    with _labelstudio(manifest, dataset, url, api_key) as (ls_url, ls_key):
        step(0.02, "pulling finished batches")
        # a crashed run's pulls (applied, not in the history yet) belong to this iteration, as they would have
        since = max((it["started_at"] + it["seconds"] for it in done), default=0.0)
        summary.pulled = {**pulled_since(dataset, since), **pull_finished(dataset, ls_url, ls_key)}
        _maybe_crash(crash_after, "pull")
        step(0.2, "embedding new samples")
        summary.embedded = _embed(dataset, manifest)
        if manifest.quality.enabled:
            step(0.3, "checking data quality")
            summary.quality = _quality(dataset, manifest)
        if manifest.model is not None:
            from curate_loop.runs.model_step import run_model_step

            doing = "reading" if manifest.model.kind == "field" else "training"
            step(0.35, f"model step: {doing} {manifest.model.name}")
            summary.model = run_model_step(dataset, manifest, iteration).to_dict()
        _maybe_crash(crash_after, "model")
        if manifest.mislabels.enabled:
            step(0.45, "scanning labels for mislabels")
            summary.suspects = _scan(dataset, manifest)
        if manifest.model is not None:
            step(0.5, "scanning boxes for label issues")
            summary.label_issues = _scan_label_issues(dataset, manifest)
        summary.notices = _notices(dataset, manifest)
        _maybe_crash(crash_after, "scan")
        step(0.6, f"curating {summary.batch}")
        picked = _curate(dataset, manifest, summary)
        _maybe_crash(crash_after, "curate")
        answer = []
        if picked:
            step(0.8, f"pushing {summary.batch}")
            summary.pushed = _push(dataset, manifest, summary.batch, ls_url, ls_key, summary.model).created
            answer.append(summary.batch)
        _maybe_crash(crash_after, "push")
        reannotate = manifest.mislabels.reannotate_batch
        if reannotate in pending_reannotation(dataset, reannotate):
            step(0.85, f"pushing the re-annotation batch {reannotate}")
            summary.reannotate_batch = reannotate
            summary.reannotate_pushed = _push(dataset, manifest, reannotate, ls_url, ls_key, summary.model).created
            answer.append(reannotate)
        if simulate_annotator and answer:
            from curate_loop.loop.simulate import answer_batch

            step(0.9, "simulated annotator answering (from the kept-aside true labels)")
            summary.simulated_answers = sum(answer_batch(dataset, batch, truth_field, url=ls_url, api_key=ls_key)
                                            for batch in answer)
    _record(dataset, summary)
    step(1.0, f"iteration {iteration} done" if picked else "the pool is empty: every sample is labeled or queued")
    return summary


def _push(dataset, manifest: Manifest, batch: str, url: str | None, api_key: str | None, model: dict | None):
    """Push ``batch`` with the manifest's label field, classes and media mode, and the predictions of ``model`` (a
    model step record) as pre-annotations where ``labelstudio.pre_annotations`` asks for them."""
    from curate_loop.runs.labelstudio import push_batch

    if batch == reannotate_batch_name(dataset) and _has_fixes(dataset, batch):
        return _push_fixes(dataset, manifest, batch, url, api_key)
    return push_batch(dataset, batch, manifest.label_field, url=url, api_key=api_key, classes=manifest.classes,
                      media=manifest.labelstudio.media, predictions_field=model["field"] if model else None,
                      model_version=model["model_version"] if model else None,
                      pre_annotations=manifest.labelstudio.pre_annotations)


def _has_fixes(dataset, batch: str) -> bool:
    from fiftyone import ViewField as F

    from curate_loop.runs.label_issues import FIX_FIELD
    from curate_loop.runs.pool import BATCH_FIELD

    return dataset.has_field(FIX_FIELD) and bool(len(dataset.match(F(BATCH_FIELD) == batch).exists(FIX_FIELD)))


def _push_fixes(dataset, manifest: Manifest, batch: str, url: str | None, api_key: str | None):
    """The re-annotation batch with the label-issue review's suggested fixes as pre-annotations (samples sent by the
    mislabel review carry no fix: their own labels); a pushed fix is cleared, so a later re-annotation of the sample
    never sends it again."""
    from fiftyone import ViewField as F

    from curate_loop.runs.label_issues import FIX_FIELD, PUSH_MODEL_VERSION
    from curate_loop.runs.labelstudio import push_batch
    from curate_loop.runs.pool import BATCH_FIELD

    summary = push_batch(dataset, batch, manifest.label_field, url=url, api_key=api_key, classes=manifest.classes,
                         media=manifest.labelstudio.media, predictions_field=FIX_FIELD,
                         model_version=PUSH_MODEL_VERSION, pre_annotations="predictions")
    pushed = dataset.match(F(BATCH_FIELD) == batch).exists(FIX_FIELD)
    pushed.set_values(FIX_FIELD, [None] * len(pushed))
    return summary


def _notices(dataset, manifest: Manifest) -> list[str]:
    """The random-weights line of each embeddings run this iteration's results rest on, and the fallback-model
    line of each run embedded with the manifest's fallback (none when fine)."""
    from curate_loop.loop.embedding_models import choose_models
    from curate_loop.runs.embeddings import METHOD, random_weights_notice

    notices = []
    for key in (manifest.embeddings.key, manifest.embeddings.objects_key):
        if key not in dataset.list_runs(method=METHOD):
            continue
        for notice in (random_weights_notice(dataset, key), choose_models(dataset, manifest, key)[1]):
            if notice and notice not in notices:
                notices.append(notice)
    return notices


def _maybe_crash(crash_after: str | None, step_name: str) -> None:
    if crash_after == step_name:
        raise RuntimeError(f"simulated crash after {step_name}")


@contextmanager
def _labelstudio(manifest: Manifest, dataset, url: str | None, api_key: str | None):
    """The server to talk to: the given URL, the manifest's, ``$LABEL_STUDIO_URL``, or a local one started here."""
    url = url or manifest.labelstudio.url or os.environ.get("LABEL_STUDIO_URL")
    if url:
        yield url, api_key
        return
    from curate_loop.adapters.labelstudio.server import start_label_studio
    from curate_loop.paths import curate_loop_home

    # The parent of the media's common folder: Label Studio refuses a local storage at its document root itself.
    root = os.path.dirname(os.path.commonpath(dataset.distinct("filepath"))) if len(dataset) else None
    with start_label_studio(data_dir=curate_loop_home() / "labelstudio", document_root=root) as server:
        previous = os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
        os.environ["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(server.document_root)
        try:
            yield server.url, server.token
        finally:
            if previous is None:
                os.environ.pop("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", None)
            else:
                os.environ["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = previous


def _pull_counts(pull: dict) -> dict:
    counts = {k: v for k, v in pull.items() if isinstance(v, (int, float, str)) and k != "pulled_at"}
    counts = {**counts, "conflicts": len(pull.get("conflicts") or []),
              "outside_classes": pull.get("outside_classes") or {}}
    if pull.get("model_assist"):  # how annotators changed the model's regions (the loop report shows the rate)
        counts["model_assist"] = pull["model_assist"]
    return counts


def pulled_since(dataset, since: float) -> dict:
    """batch -> counts of its latest pull made after ``since`` (e.g. by a run that crashed before recording)."""
    from curate_loop.runs.labelstudio import list_pushed_batches, pulls

    found = {}
    for batch in list_pushed_batches(dataset):
        recent = [p for p in pulls(dataset, batch) if p.get("pulled_at", 0) > since and not p.get("undone_at")]
        if recent:
            found[batch] = _pull_counts(recent[-1])
    return found


def pull_finished(dataset, url: str | None, api_key: str | None) -> dict:
    """Pull every pushed batch that has finished annotations; batch -> what the pull changed."""
    from curate_loop.runs.labelstudio import batch_status, list_pushed_batches, pull_batch

    pulled = {}
    for batch in list_pushed_batches(dataset):
        status = batch_status(dataset, batch, url=url, api_key=api_key)
        if status.get("server") == "unreachable":
            raise InvalidInputError(f"Label Studio at {url} does not answer; nothing was pulled. Start it (or fix "
                                    "labelstudio.url in the manifest) and run again.")
        if status.get("server") == "no key":
            from curate_loop.adapters.labelstudio.errors import LabelStudioKeyMissing

            raise LabelStudioKeyMissing(f"No Label Studio API key for {url}: nothing was pulled. Export "
                                        "LABEL_STUDIO_API_KEY (or `source ~/.curate-loop/labelstudio.env`) and run "
                                        "again.")
        if status["state"] in ("in_progress", "annotated"):
            pulled[batch] = _pull_counts(asdict(pull_batch(dataset, batch, url=url, api_key=api_key)))
    return pulled


def _embed(dataset, manifest: Manifest) -> int:
    from curate_loop.runs.embeddings import compute_embeddings

    from curate_loop.loop.embedding_models import choose_models

    models, _ = choose_models(dataset, manifest, manifest.embeddings.key)  # the note is one of _notices
    # with quality checks on, the images are measured in this same decode; the quality step then only scores
    settings = manifest.embeddings
    return compute_embeddings(dataset, settings.key, models, quality=manifest.quality.enabled, backend=settings.backend,
                              ray_address=settings.ray_address, ray_actors=settings.ray_actors,
                              store_url=settings.store_url).computed


def _quality(dataset, manifest: Manifest) -> dict:
    """Measure what is not measured yet (the boxes too when the label field holds Detections), then write the
    manifest's choice per issue: which flagged samples stay out of batches, which show their issues in Label Studio.
    """
    from curate_loop.runs.pool import label_kind
    from curate_loop.runs.quality import apply_policy, compute_quality

    field = manifest.label_field
    boxes = dataset.has_field(field) and label_kind(dataset, field, needed_for="") == "detections"
    checked = compute_quality(dataset, label_field=field if boxes else None)
    return {"measured": checked.measured, "unreadable": len(checked.failed), "flagged": checked.flagged,
            "excluded": apply_policy(dataset, manifest.quality.policy())}


def _scan(dataset, manifest: Manifest) -> int | None:
    """Embed the labeled boxes (new ones only) and score them; None when nothing is labeled yet."""
    from curate_loop.runs.embeddings import compute_embeddings
    from curate_loop.runs.mislabels import find_mislabels
    from curate_loop.runs.pool import label_fields, label_kind, labeled_view

    field = manifest.label_field
    if field not in label_fields(dataset):
        raise InvalidInputError(f"label_field {field!r} of the manifest is not a Detections or Classification field "
                                f"of {dataset.name!r}; label fields: {label_fields(dataset)}")
    labeled = labeled_view(dataset, field)
    if not len(labeled):
        return None
    from curate_loop.loop.embedding_models import choose_models

    is_boxes = label_kind(dataset, field, needed_for="; the mislabel scan needs one of them.") == "detections"
    key = manifest.embeddings.objects_key if is_boxes else manifest.embeddings.key
    if is_boxes:
        compute_embeddings(labeled, key, choose_models(dataset, manifest, key)[0], patches_field=field,
                           store_url=manifest.embeddings.store_url)
    return find_mislabels(labeled, field, key).suspects


def _scan_label_issues(dataset, manifest: Manifest) -> int | None:
    """Box-level label issues of the labeled samples the model step predicted; None when it predicted none of them
    (a model step without out-of-fold predictions writes only the pool's) or the labels are not boxes."""
    from fiftyone import ViewField as F

    from curate_loop.runs.label_issues import find_label_issues
    from curate_loop.runs.pool import label_kind, labeled_view

    if manifest.model is None:
        return None
    field, predictions = manifest.label_field, manifest.model.field
    if not (dataset.has_field(field) and dataset.has_field(predictions)) or \
            label_kind(dataset, field, needed_for=".") != "detections":
        return None
    predicted = labeled_view(dataset, field).match(F(predictions).exists())
    if not len(predicted):
        return None
    return find_label_issues(predicted, field, predictions).issues


def _curate(dataset, manifest: Manifest, summary: IterationSummary) -> bool:
    """Pick this iteration's batch, unless a crashed run already did (then it is reused as it is). False when
    nothing is left to pick."""
    from fiftyone import ViewField as F

    from curate_loop.runs.curation import METHOD, select_batch
    from curate_loop.runs.pool import BATCH_FIELD, DUP_KEEP_FIELD, QUALITY_EXCLUDE_FIELD, unlabeled_view

    if summary.batch in dataset.list_runs(method=METHOD):  # the loop's own (see _claim_batch): a crashed run picked it
        summary.reused_batch = True
        summary.selected = len(dataset.load_saved_view(summary.batch))
        return True
    pool = unlabeled_view(dataset, manifest.label_field)
    if dataset.has_field(BATCH_FIELD):
        pool = pool.match(~F(BATCH_FIELD).exists())
    if dataset.has_field(DUP_KEEP_FIELD):
        pool = pool.match(F(DUP_KEEP_FIELD) != False)  # noqa: E712 (a MongoDB expression)
    if dataset.has_field(QUALITY_EXCLUDE_FIELD):
        pool = pool.match(F(QUALITY_EXCLUDE_FIELD) != True)  # noqa: E712
    k = min(manifest.curation.budget, len(pool))
    if k == 0:
        return False
    picked = select_batch(dataset, summary.batch, k, manifest.embeddings.key,
                          strategy=manifest.curation.strategy, label_field=manifest.label_field,
                          near_dup_threshold=manifest.curation.near_duplicate_threshold,
                          min_cluster_size=manifest.curation.min_cluster_size,
                          predictions_field=manifest.model.field if manifest.model else None,
                          objectives=manifest.objectives(), classes=manifest.classes)
    summary.selected, summary.report_path = picked.picked, picked.report_path
    summary.batch_mode, summary.batch_contributions = picked.mode, picked.contributions
    return True


MANIFEST_ENV = "CURATE_LOOP_MANIFEST"


def manifest_path_for(dataset) -> str | None:
    """The manifest that drives ``dataset``'s loop, for the App (which has no command line): ``$CURATE_LOOP_MANIFEST``,
    else the one the last iteration ran, else ``./manifest.yml``; only one whose ``dataset`` is this dataset."""
    import yaml

    recorded = [it.get("manifest_path") for it in sorted(history(dataset), key=lambda it: it["iteration"])]
    for candidate in [os.environ.get(MANIFEST_ENV), *reversed(recorded), "manifest.yml"]:
        if not candidate or not os.path.isfile(candidate):
            continue
        try:
            if (yaml.safe_load(open(candidate, encoding="utf-8")) or {}).get("dataset") == dataset.name:
                return os.path.abspath(candidate)
        except (OSError, yaml.YAMLError, AttributeError):
            continue
    return None


def reannotate_batch_name(dataset) -> str:
    """The re-annotation batch of ``dataset``: ``mislabels.reannotate_batch`` of the manifest that drives its loop
    (:func:`manifest_path_for`), else ``REANNOTATE_BATCH``. Where the App and the CLI send labels for re-annotation."""
    from curate_loop.errors import CurateLoopError
    from curate_loop.loop.manifest import load_manifest
    from curate_loop.runs.mislabels import REANNOTATE_BATCH

    path = manifest_path_for(dataset)
    if path is None:
        return REANNOTATE_BATCH
    try:
        return load_manifest(path).mislabels.reannotate_batch
    except CurateLoopError:  # an invalid manifest: `curate-loop run` explains it; the default batch still works
        return REANNOTATE_BATCH


def pending_reannotation(dataset, batch: str) -> list[str]:
    """``[batch]`` when some samples queued in re-annotation batch ``batch`` have no Label Studio task of it yet
    (it grows with every "send for re-annotation"), else ``[]``."""
    from fiftyone import ViewField as F

    from curate_loop.runs.labelstudio import _load_record
    from curate_loop.runs.pool import BATCH_FIELD

    if not dataset.has_field(BATCH_FIELD):
        return []
    members = set(dataset.match(F(BATCH_FIELD) == batch).values("id"))
    record = _load_record(dataset, batch) or {}
    return [batch] if members - set(record.get("task_ids") or {}) else []


def unpushed_batches(dataset, reannotate_batch: str | None = None) -> list[str]:
    """Batches picked that are not in Label Studio yet (a push that failed or was never run), then the
    re-annotation batch (``reannotate_batch``, default :func:`reannotate_batch_name`) when some of it is not."""
    from curate_loop.runs.curation import list_batches
    from curate_loop.runs.labelstudio import list_pushed_batches

    pushed = set(list_pushed_batches(dataset))
    picked = [b["name"] for b in list_batches(dataset) if b["name"] not in pushed]
    return picked + pending_reannotation(dataset, reannotate_batch or reannotate_batch_name(dataset))


def push_pending(dataset, manifest: Manifest, url: str | None, api_key: str | None) -> dict:
    """Push every picked batch that is not in Label Studio yet, and the samples of the re-annotation batch that have
    no task yet; batch -> tasks created."""
    model = _latest_model(dataset) if manifest.model is not None else None
    return {batch: _push(dataset, manifest, batch, url, api_key, model).created
            for batch in unpushed_batches(dataset, manifest.mislabels.reannotate_batch)}


def _latest_model(dataset) -> dict | None:
    """The model step record of the latest iteration that ran one: whose predictions the dataset holds now."""
    runs = [it for it in sorted(history(dataset), key=lambda it: it["iteration"]) if it.get("model")]
    return runs[-1]["model"] if runs else None


def status(manifest: Manifest, *, url: str | None = None, api_key: str | None = None, top_suspects: int = 5) -> dict:
    """Iterations so far, the state of every pushed batch (with a link to its Label Studio tab), the batches not
    pushed yet, the top open mislabel suspects and the loop report."""
    from curate_loop.runs.datasets import open_dataset
    from curate_loop.runs.labelstudio import batch_status, list_pushed_batches
    from curate_loop.runs.mislabels import top_suspects as read_suspects

    dataset = open_dataset(manifest.dataset)
    url = url or manifest.labelstudio.url or os.environ.get("LABEL_STUDIO_URL")
    batches = [batch_status(dataset, b, url=url, api_key=api_key) for b in list_pushed_batches(dataset)]
    report = loop_report_path(dataset)
    return {"dataset": dataset.name, "iterations": history(dataset), "batches": batches,
            "unpushed": unpushed_batches(dataset, manifest.mislabels.reannotate_batch),
            "suspects": read_suspects(dataset, manifest.label_field, top_suspects),
            "report_path": str(report) if report.exists() else None}
