"""Data quality in the loop, on the example against the real parts (FiftyOne and its MongoDB, the real Label Studio
server): darkened and blurred copies of a few pool images are planted into a copy of the example, the quality
checks flag them, and the manifest's ``quality:`` policy decides whether they may enter a batch.

- ``exclude``: a flagged sample never enters a batch (``PoolState.excluded``), even when the batch takes every
  sample it may;
- ``keep``: the same samples can be picked;
- ``flag``: they can be picked, and their Label Studio task's data carries their ``quality_issues``.

Also: the manifest section (defaults, a clear error for an unknown issue), and the Data quality panel's methods run
the way the App runs them (through FiftyOne's operator executor).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from curate_loop.errors import InvalidInputError
from curate_loop.loop.manifest import load_manifest
from curate_loop.plugin_install import PLUGIN_NAME
from curate_loop.runs.pool import QUALITY_EXCLUDE_FIELD

PLANTED = {"dark": 3, "blurry": 3}  # issue -> copies planted
DARK_FACTOR = 0.06  # brightness kept by a darkened copy
BLUR_RADIUS = 4  # Gaussian blur of a blurred copy, pixels


def clone(source, name: str):
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    return source.clone(name)


def plant_copies(dataset, folder: Path, planted: dict[str, int] = PLANTED) -> dict[str, list[str]]:
    """Add darkened / blurred copies of regular pool images as new (unlabeled) pool samples; issue -> their ids."""
    import fiftyone as fo
    from fiftyone import ViewField as F
    from PIL import Image, ImageFilter

    folder.mkdir(parents=True, exist_ok=True)
    pool = dataset.match_tags("pool").match(F("example_kind") == "regular").sort_by("filepath").values("filepath")
    sources = [path for path in pool if _clean(path)]
    planted_ids, start = {}, 0
    for issue, n in planted.items():
        samples = []
        for path in sources[start:start + n]:
            image = Image.open(path).convert("RGB")
            if issue == "dark":
                image = Image.fromarray((np.asarray(image, dtype=np.float32) * DARK_FACTOR).astype(np.uint8))
            elif issue == "blurry":
                image = image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
            target = folder / f"{issue}_{Path(path).stem}.png"  # lossless: no JPEG blocks on the blurred copies
            image.save(target)
            samples.append(fo.Sample(filepath=str(target), tags=["pool"], split="pool",
                                     example_kind=f"planted_{issue}"))
        planted_ids[issue] = [str(i) for i in dataset.add_samples(samples)]
        start += n
    dataset.compute_metadata()
    return planted_ids


def _clean(path) -> bool:
    """Whether an image is far from every flag before it is planted: detailed, colourful and of some contrast (some
    of the example's canvases are flat or gray on purpose; on a faint one, blur hardly lowers the sharpness measure,
    which is relative to the image's contrast)."""
    from PIL import Image

    from curate_loop.quality.image_metrics import image_metrics

    metrics = image_metrics(np.asarray(Image.open(path).convert("RGB")))
    return metrics["entropy"] >= 6 and metrics["colorfulness"] >= 0.05 and metrics["contrast"] >= 0.15


def issues_of(dataset, ids) -> dict[str, list[str]]:
    """sample id -> its ``quality_issues``."""
    view = dataset.select(ids)
    return dict(zip(view.values("id"), (issues or [] for issues in view.values("quality_issues"))))


@pytest.fixture(scope="module")
def planted(example_dataset, tmp_path_factory):
    """A copy of the example with planted copies, its quality computed, and random image vectors ``img``."""
    from curate_loop.runs import embeddings as runs
    from curate_loop.runs.quality import compute_quality

    dataset = clone(example_dataset, "quality-loop")
    ids = plant_copies(dataset, tmp_path_factory.mktemp("planted"))
    compute_quality(dataset, label_field="ground_truth")
    vectors = np.random.default_rng(3).normal(size=(len(dataset), 16)).astype(np.float32)
    runs.import_embeddings(dataset, "img", vectors)
    yield dataset, ids
    dataset.delete()


# -- manifest ---------------------------------------------------------------------------------------------------------
def _manifest(tmp_path, quality) -> Path:
    path = tmp_path / "manifest.yml"
    path.write_text(yaml.safe_dump({"dataset": "d", "classes": ["0"], "quality": quality}))
    return path


def test_quality_section_defaults_and_errors(tmp_path):
    from curate_loop.quality.thresholds import BOX_ISSUES, IMAGE_ISSUES

    path = tmp_path / "bare.yml"
    path.write_text(yaml.safe_dump({"dataset": "d", "classes": ["0"]}))
    bare = load_manifest(path).quality
    assert bare.enabled is False  # no decode pass unless asked for
    policy = bare.policy()
    assert list(policy) == list(IMAGE_ISSUES + BOX_ISSUES)
    assert {i for i, a in policy.items() if a == "exclude"} == {"dark", "bright", "blurry", "low_information",
                                                                "exact_duplicate"}
    assert {a for i, a in policy.items() if i in BOX_ISSUES} == {"flag"}

    given = load_manifest(_manifest(tmp_path, {"enabled": True, "issues": {"dark": "keep", "tiny_box": "exclude"}}))
    assert given.quality.enabled and given.quality.policy()["dark"] == "keep"
    assert given.quality.policy()["tiny_box"] == "exclude" and given.quality.policy()["bright"] == "exclude"

    with pytest.raises(InvalidInputError, match=r"quality\.issues: unknown issue\(s\) \['drak'\]; the issues are "
                                                r"\['dark', 'bright'"):
        load_manifest(_manifest(tmp_path, {"issues": {"drak": "exclude"}}))
    with pytest.raises(InvalidInputError, match=r"quality\.issues\.dark: must be one of 'exclude', 'keep' or 'flag'"):
        load_manifest(_manifest(tmp_path, {"issues": {"dark": "drop"}}))
    with pytest.raises(InvalidInputError, match=r"quality\.threshold: unknown key"):
        load_manifest(_manifest(tmp_path, {"threshold": 0.5}))


def test_the_repository_manifest_names_known_issues():
    manifest = load_manifest(Path(__file__).resolve().parent.parent / "manifest.yml")
    assert manifest.quality.issues["dark"] == "exclude"


# -- the pool -----------------------------------------------------------------------------------------------------------
def test_the_checks_flag_the_planted_copies(planted):
    dataset, ids = planted
    for issue, planted_ids in ids.items():
        flagged = issues_of(dataset, planted_ids)
        assert all(issue in issues for issues in flagged.values()), (issue, flagged)


def _available_ids(dataset) -> set[str]:
    from curate_loop.runs.embeddings import load_embeddings
    from curate_loop.runs.pool import pool_state

    ids, _ = load_embeddings(dataset, "img")
    state = pool_state(dataset, ids, "ground_truth")
    return set(ids[state.available].tolist())


def test_excluded_issues_never_enter_a_batch_and_kept_ones_can(planted):
    from curate_loop.runs.curation import select_batch
    from curate_loop.runs.quality import apply_policy

    dataset, ids = planted
    planted_ids = {i for group in ids.values() for i in group}
    keep_all = {issue: "keep" for issue in load_manifest_policy()}

    excluded = apply_policy(dataset, {**keep_all, "dark": "exclude", "blurry": "exclude"})
    assert excluded >= len(planted_ids)
    marked = set(dataset.match({QUALITY_EXCLUDE_FIELD: True}).values("id"))
    assert planted_ids <= marked and len(marked) == excluded
    available = _available_ids(dataset)
    unlabeled = set(dataset.exists("ground_truth", False).values("id"))
    assert not available & planted_ids and available == unlabeled - marked
    # a batch of every sample it may take, by each strategy: none of the excluded
    for strategy in ("cluster_balanced", "random"):
        name = f"every_{strategy}"
        picked = select_batch(dataset, name, len(available), "img", strategy=strategy, label_field="ground_truth",
                              near_dup_threshold=None, report=False)
        batch = set(dataset.load_saved_view(name).values("id"))
        assert picked.picked == len(batch) and not batch & marked
        assert picked.pool["excluded"] == len(marked & unlabeled)
        dataset.untag_samples(name)
        _drop_batch(dataset, name)

    assert apply_policy(dataset, keep_all) == 0  # keep: the loop ignores the flags
    assert not dataset.match({QUALITY_EXCLUDE_FIELD: True}).count()
    available = _available_ids(dataset)
    assert planted_ids <= available
    select_batch(dataset, "every_kept", len(available), "img", strategy="random", label_field="ground_truth",
                 report=False)
    assert planted_ids <= set(dataset.load_saved_view("every_kept").values("id"))
    _drop_batch(dataset, "every_kept")


def load_manifest_policy() -> dict[str, str]:
    from curate_loop.loop.manifest import Quality

    return Quality().policy()


def _drop_batch(dataset, name: str) -> None:
    """Undo a test batch: its samples back in the pool, its run and saved view gone."""
    from curate_loop.runs.pool import BATCH_FIELD, REASON_FIELD

    view = dataset.load_saved_view(name)
    view.set_field(BATCH_FIELD, None).set_field(REASON_FIELD, None).save()
    dataset.delete_saved_view(name)
    dataset.delete_run(name)


# -- the loop, end to end -----------------------------------------------------------------------------------------------
@pytest.fixture
def ls_env(labelstudio, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(labelstudio.document_root))
    return labelstudio


def _task_data(labelstudio, dataset, batch) -> dict[str, dict]:
    """sample id -> the data of its task in ``batch``, read from the Label Studio server."""
    from curate_loop.adapters.labelstudio import tasks as ls_tasks
    from curate_loop.adapters.labelstudio.client import SAMPLE_KEY, connect
    from curate_loop.runs.labelstudio import batch_status

    project_id = batch_status(dataset, batch, url=labelstudio.url, api_key=labelstudio.token)["project_id"]
    with connect(labelstudio.url, labelstudio.token) as conn:
        return {t["data"][SAMPLE_KEY]: t["data"] for t in ls_tasks.batch_tasks(conn, project_id, batch)}


def test_an_iteration_leaves_out_excluded_issues_and_flags_the_others_in_label_studio(example_dataset, ls_env,
                                                                                       tmp_path):
    from curate_loop.loop.runner import history, run_iteration

    dataset = clone(example_dataset, "quality-iteration")
    try:
        ids = plant_copies(dataset, tmp_path / "planted")
        path = tmp_path / "manifest.yml"
        path.write_text(yaml.safe_dump({
            "dataset": dataset.name, "label_field": "ground_truth", "classes": [str(d) for d in range(10)],
            "embeddings": {"key": "img", "models": [{"name": "classical"}]},
            "curation": {"budget": len(dataset), "strategy": "random"},  # every sample it may take
            "mislabels": {"enabled": False},
            "quality": {"enabled": True, "issues": {"dark": "exclude", "blurry": "flag"}},
            "labelstudio": {"url": ls_env.url, "media": "local_files"}}))
        summary = run_iteration(load_manifest(path), api_key=ls_env.token)

        batch = set(dataset.load_saved_view(summary.batch).values("id"))
        excluded = set(dataset.match({QUALITY_EXCLUDE_FIELD: True}).values("id"))
        unlabeled = set(dataset.exists("ground_truth", False).values("id"))
        assert set(ids["dark"]) <= excluded and not batch & excluded
        assert batch == unlabeled - excluded  # everything else was picked, the blurred copies included
        assert set(ids["blurry"]) <= batch
        assert summary.quality["excluded"] == len(excluded)
        assert history(dataset)[-1]["quality"] == summary.quality

        data = _task_data(ls_env, dataset, summary.batch)
        assert set(data) == batch and summary.pushed == len(batch)
        for sample_id in ids["blurry"]:  # flag: the annotator sees why
            assert "blurry" in data[sample_id]["quality_issues"]
        flagged = issues_of(dataset, list(batch))
        for sample_id, task in data.items():  # only issues whose policy is flag, only on flagged samples
            shown = task.get("quality_issues") or []
            assert set(shown) <= set(flagged[sample_id]) and "dark" not in shown
    finally:
        dataset.delete()


# -- the panel, as the App runs it --------------------------------------------------------------------------------------
def run(name, **ctx):
    from fiftyone.operators import execute_operator

    result = execute_operator(f"{PLUGIN_NAME}/{name}", ctx=ctx)
    assert result.error is None, result.error
    return result.result


def panel(dataset, method: str, state: dict, **params):
    run("data_quality", dataset=dataset.name,
        params={"__method__": method, "panel_id": "q1", "panel_state": state, **params})
    return state


def test_the_panel_moves_a_threshold_and_excludes_what_it_flags(planted):
    from curate_loop.runs.quality import metric_values, quality_thresholds

    from curate_loop.plugin.quality import flagged_mask

    dataset, ids = planted
    state = panel(dataset, "on_load", {})
    rows = {r["issue"]: r for r in state["overview"]["issues"]}
    assert state["issue"] == "dark" and rows["dark"]["flagged"] >= len(ids["dark"])
    kept, flagged = state["histogram"]
    assert (kept["name"], flagged["name"]) == ("kept", "flagged")
    values = metric_values(dataset, rows["dark"]["metric"])
    assert sum(flagged["y"]) == int(flagged_mask(values, rows["dark"]["threshold"], "low").sum())
    assert sum(kept["y"]) + sum(flagged["y"]) == int(np.isfinite(values).sum())

    # a threshold that flags two more samples than the planted ones
    threshold = float(np.sort(values[np.isfinite(values)])[len(ids["dark"]) + 1])
    expected = int((values <= threshold).sum())
    panel(dataset, "set_threshold", state, value=threshold)
    assert state["message"] == f"dark: threshold {threshold:.4g}, {expected} flagged."
    assert quality_thresholds(dataset)["dark"]["threshold"] == pytest.approx(threshold)
    dataset.reload()
    dark = set(dataset.match({"quality_issues": "dark"}).values("id"))
    assert len(dark) == expected == {r["issue"]: r for r in state["overview"]["issues"]}["dark"]["flagged"]
    assert sum(state["histogram"][1]["y"]) == expected

    dataset.set_values(QUALITY_EXCLUDE_FIELD, [False] * len(dataset))
    panel(dataset, "exclude", state)
    assert set(dataset.match({QUALITY_EXCLUDE_FIELD: True}).values("id")) == dark
    assert state["message"].startswith(f"{expected} samples flagged dark are excluded from curation")
    panel(dataset, "include", state)
    assert not dataset.match({QUALITY_EXCLUDE_FIELD: True}).count()
    panel(dataset, "tag", state)
    assert set(dataset.match_tags("quality:dark").values("id")) == dark

    panel(dataset, "select_issue", state, value="blurry")
    assert state["issue"] == "blurry" and sum(state["histogram"][1]["y"]) >= len(ids["blurry"])


def test_the_sliders_echoes_change_nothing_and_each_move_renders_a_fresh_slider(planted):
    """The App's slider sends the value it was given when it mounts (rounded as the panel shows it): that keeps the
    adaptive threshold adaptive. Every move (click, typed value, reset) keys the slider by the new threshold, so a
    late echo of a slider rendered before the move (a busy App sends it seconds later) does not undo the move."""
    from curate_loop.runs.quality import metric_values, quality_thresholds, quality_run

    from curate_loop.plugin.quality import threshold_path

    dataset, _ = planted
    panel(dataset, "reset_threshold", panel(dataset, "on_load", {}))
    record = quality_run(dataset)
    state = panel(dataset, "on_load", {})
    shown = {r["issue"]: r for r in state["overview"]["issues"]}["dark"]["threshold"]
    first_slider = threshold_path("dark", shown)
    panel(dataset, "set_threshold", state, value=shown, path=first_slider)
    assert not quality_thresholds(dataset)["dark"].get("user") and state.get("message") is None
    assert quality_run(dataset) == record

    values = np.sort(metric_values(dataset, quality_thresholds(dataset)["dark"]["metric"]))
    clicked = float(values[np.isfinite(values)][-3])
    panel(dataset, "click_histogram", state, x=clicked)
    assert quality_thresholds(dataset)["dark"]["threshold"] == pytest.approx(clicked)
    assert threshold_path("dark", clicked) != first_slider
    panel(dataset, "set_threshold", state, value=shown, path=first_slider)  # the first slider's late echo
    assert quality_thresholds(dataset)["dark"]["threshold"] == pytest.approx(clicked)

    typed = float(values[np.isfinite(values)][-2])
    panel(dataset, "set_threshold", state, value=typed, path=threshold_path("dark", clicked))
    assert quality_thresholds(dataset)["dark"]["threshold"] == typed
    assert state["message"].startswith(f"dark: threshold {typed:.4g}")
    panel(dataset, "reset_threshold", state)
    assert not quality_thresholds(dataset)["dark"].get("user")
    panel(dataset, "set_threshold", state, value=typed, path=threshold_path("dark", typed))  # before the reset
    assert not quality_thresholds(dataset)["dark"].get("user")


def test_the_panel_says_what_to_run_before_any_quality_run(example_dataset):
    dataset = clone(example_dataset, "quality-none")
    try:
        state = panel(dataset, "on_load", {})
        assert state["overview"] is None and state["histogram"] is None
    finally:
        dataset.delete()


def test_the_operators_compute_exclude_and_tag(planted):
    dataset, ids = planted
    target = dataset.select(ids["dark"])
    result = run("quality_exclude", dataset=dataset.name, view=target,
                 params={"decision": "exclude"})
    assert result["count"] == len(ids["dark"])
    assert set(dataset.match({QUALITY_EXCLUDE_FIELD: True}).values("id")) >= set(ids["dark"])
    result = run("quality_exclude", dataset=dataset.name, view=target, params={"decision": "include"})
    assert not dataset.select(ids["dark"]).match({QUALITY_EXCLUDE_FIELD: True}).count()

    result = run("quality_tag", dataset=dataset.name, params={"issues": ["blurry"]})
    assert set(ids["blurry"]) <= set(dataset.match_tags("quality:blurry").values("id"))
    assert result["tagged"].startswith("quality:blurry ")

    result = run("compute_quality", dataset=dataset.name, params={"label_field": "ground_truth"})
    assert "error" not in result, result
    assert (result["measured"], result["skipped"], result["failed"]) == (0, len(dataset), 0)  # resumed
