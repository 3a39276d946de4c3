"""Label Studio sync: our push (1,000 and 10,000 tasks with pre-annotations) and pull (1,000 annotated tasks)
against the server's own limit (one raw ``import_tasks`` of the same task JSON, one raw ``tasks.list`` read of the
same annotations) and FiftyOne's built-in backend (``annotate(backend="labelstudio")`` + ``load_annotations``) in
its default upload mode and in its local-files mode, on the same 1,000 samples.

Everything runs against one local Label Studio server the bench starts (its own data dir, local-files root = the
bench's media folder) and a throwaway FiftyOne database. Each 1,000-task figure, ours and the anchors' alike, is the
median of ``REPEATS`` runs (a fresh project each; a pull is undone between runs): single runs on a 2-core machine
vary by +-20%, as much as the margins the targets ask for. Annotations are made on the server in one request with
the Data Manager action "predictions to annotations", for ours and the built-in backend alike. Progress goes to
stderr; stdout gets the one ``BENCH {json}`` line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

N_SMALL, N_LARGE, BOXES, SIZE, SEED = 1_000, 10_000, 3, (64, 48), 0
REPEATS = 3
TARGET = {"push_vs_raw": 1.5, "pull_vs_raw": 1.5, "speedup_vs_builtin": 3.0, "push_10k_seconds": 30.0}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _make_media(folder: Path, n: int) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        if not path.exists():
            Image.new("RGB", SIZE, ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)).save(path, quality=70)
        paths.append(str(path))
    return paths


def _dataset(name: str, paths: list[str]):
    import fiftyone as fo

    rng = __import__("random").Random(SEED)
    samples = []
    for path in paths:
        dets = [fo.Detection(label=str(rng.randrange(10)), bounding_box=[rng.uniform(0, .6), rng.uniform(0, .6),
                                                                         rng.uniform(.1, .3), rng.uniform(.1, .3)])
                for _ in range(BOXES)]
        samples.append(fo.Sample(filepath=path, ground_truth=fo.Detections(detections=dets), curate_batch="bench",
                                 metadata=fo.ImageMetadata(width=SIZE[0], height=SIZE[1])))
    dataset = fo.Dataset(name)
    dataset.add_samples(samples, progress=False)
    return dataset


def _annotate_all(conn, project_id: int) -> None:
    conn.sdk.actions.create(id="predictions_to_annotations", project=project_id,
                            selected_items={"all": True, "excluded": []})


def _timed(fn):
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def _median_timed(fn, before=None) -> tuple[float, list[float], list]:
    """``fn(i)`` timed for ``i`` in ``range(REPEATS)``, ``before(i)`` (untimed) first: (median, times, values)."""
    import statistics

    times, values = [], []
    for i in range(REPEATS):
        if before:
            before(i)
        seconds, value = _timed(lambda: fn(i))
        times.append(round(seconds, 2))
        values.append(value)
    return statistics.median(times), times, values


def main() -> None:
    from curate_loop.paths import curate_loop_home

    db_name = f"curate-loop-bench-{os.getpid()}"
    os.environ["FIFTYONE_DATABASE_NAME"] = db_name
    os.environ["FIFTYONE_DATABASE_DIR"] = str(curate_loop_home() / "bench" / "mongodb")
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    import fiftyone as fo
    import fiftyone.core.odm.database as fodb

    from curate_loop.adapters.labelstudio.client import Connection
    from curate_loop.adapters.labelstudio.server import start_label_studio
    from curate_loop.runs import labelstudio as sync

    if fo.config.database_name != db_name:
        raise RuntimeError(f"FiftyOne was imported before the bench set its database ({fo.config.database_name})")
    fo.config.show_progress_bars = False
    work = Path(tempfile.mkdtemp(prefix="curate-loop-bench-ls-"))
    media = work / "media"
    _log("making media")
    paths = _make_media(media / "images", N_LARGE)
    _log("starting Label Studio (first start migrates its database, ~30-60 s)")
    server = start_label_studio(data_dir=work / "labelstudio", document_root=media)
    conn = Connection(server.url, server.token)
    kw = {"url": server.url, "api_key": server.token, "document_root": media}
    result = {"name": "labelstudio_sync", "ours": {}, "anchors": {}}
    try:
        small = _dataset(f"bench-ls-1k-{os.getpid()}", paths[:N_SMALL])
        large = _dataset(f"bench-ls-10k-{os.getpid()}", paths)
        copies = [small.clone(f"bench-ls-1k-{os.getpid()}-{i}") for i in range(REPEATS)]  # a project each

        # -- ours --
        push_1k, push_times, summaries = _median_timed(
            lambda i: sync.push_batch(copies[i], "bench", "ground_truth", **kw))
        summary = summaries[-1]
        _log(f"ours: push 1k {push_times} s ({summary.tasks} tasks)")
        repush_1k, _ = _timed(lambda: sync.push_batch(copies[-1], "bench", "ground_truth", **kw))
        push_10k, summary10 = _timed(lambda: sync.push_batch(large, "bench", "ground_truth", **kw))
        _log(f"ours: push 10k {push_10k:.1f} s ({summary10.tasks} tasks); re-push 1k {repush_1k:.2f} s")
        _annotate_all(conn, summary.project_id)
        read_kw = {k: kw[k] for k in ("url", "api_key")}
        pull_1k, pull_times, pulls = _median_timed(lambda i: sync.pull_batch(copies[-1], "bench", **read_kw),
                                                    before=lambda i: i and sync.undo_pull(copies[-1], "bench"))
        pulled = pulls[-1]
        _log(f"ours: pull 1k {pull_times} s ({pulled.applied} applied, {pulled.changed_samples} changed)")
        result["ours"] = {"push_1k_s": round(push_1k, 2), "push_10k_s": round(push_10k, 2),
                          "repush_1k_s": round(repush_1k, 2), "pull_1k_s": round(pull_1k, 2),
                          "push_1k_runs_s": push_times, "pull_1k_runs_s": pull_times,
                          "pulled_applied": pulled.applied, "pulled_changed": pulled.changed_samples}

        # -- the server's own limit: the same task JSON in one raw import; one raw read of the annotations --
        built = sync._build_tasks(small, sync.batch_members(small, "bench"), "bench", "ground_truth", "detections",
                                  media.resolve())
        built10 = sync._build_tasks(large, sync.batch_members(large, "bench"), "bench", "ground_truth",
                                    "detections", media.resolve())
        config = conn.sdk.projects.get(id=summary.project_id).label_config
        raw_projects = [conn.sdk.projects.create(title=f"raw import 1k {i}", label_config=config).id
                        for i in range(REPEATS)]
        raw_1k, raw_1k_times, _ = _median_timed(lambda i: conn.sdk.projects.import_tasks(
            id=raw_projects[i], request=built["tasks"], return_task_ids=True))
        raw_project10 = conn.sdk.projects.create(title="raw import 10k", label_config=config)
        raw_10k, _ = _timed(lambda: conn.sdk.projects.import_tasks(id=raw_project10.id, request=built10["tasks"],
                                                                   return_task_ids=True))
        raw_read, raw_read_times, n_read = _median_timed(lambda i: sum(
            len(t.annotations or []) for t in conn.sdk.tasks.list(project=summary.project_id, fields="all",
                                                                  page_size=500)))
        _log(f"raw: import 1k {raw_1k_times} s, import 10k {raw_10k:.1f} s, read {n_read} annotations "
             f"{raw_read_times} s")
        result["anchors"]["raw_server"] = {"import_1k_s": round(raw_1k, 2), "import_10k_s": round(raw_10k, 2),
                                           "read_1k_annotations_s": round(raw_read, 2),
                                           "import_1k_runs_s": raw_1k_times, "read_1k_runs_s": raw_read_times}

        # -- FiftyOne's built-in backend, same 1,000 samples --
        builtin = {}
        upload = small.clone(f"bench-ls-builtin-upload-{os.getpid()}")
        before = {p.id for p in conn.sdk.projects.list()}
        try:
            seconds, _ = _timed(lambda: upload.annotate("upload", backend="labelstudio", label_field="ground_truth",
                                                        url=server.url, api_key=server.token))
            builtin["upload_mode"] = {"push_s": round(seconds, 2), "ok": True}
        except Exception as exc:  # noqa: BLE001 - the anchor's failure is the measurement
            left = [p for p in conn.sdk.projects.list() if p.id not in before]
            builtin["upload_mode"] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}",
                                      "projects_left_behind": len(left),
                                      "tasks_in_them": sum(p.task_number or 0 for p in left)}
        _log(f"built-in upload mode: {builtin['upload_mode']}")
        locals_ = [small.clone(f"bench-ls-builtin-local-{os.getpid()}-{i}") for i in range(REPEATS)]
        os.environ["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
        os.environ["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(media)
        try:
            push_s, push_runs, annotations = _median_timed(lambda i: locals_[i].annotate(
                "local", backend="labelstudio", label_field="ground_truth", url=server.url, api_key=server.token))
            for anno in annotations:
                _annotate_all(conn, anno.project_id)
            load_s, load_runs, _ = _median_timed(lambda i: locals_[i].load_annotations(
                "local", url=server.url, api_key=server.token))
            builtin["local_files_mode"] = {"push_s": round(push_s, 2), "load_s": round(load_s, 2), "ok": True,
                                           "push_runs_s": push_runs, "load_runs_s": load_runs}
        except Exception as exc:  # noqa: BLE001
            builtin["local_files_mode"] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        _log(f"built-in local-files mode: {builtin['local_files_mode']}")
        result["anchors"]["fiftyone_builtin"] = builtin
    finally:
        conn.close()
        server.stop()
        fodb.drop_database()
        shutil.rmtree(work, ignore_errors=True)

    raw = result["anchors"]["raw_server"]
    ratios = {"push_1k_vs_raw": round(push_1k / raw["import_1k_s"], 2),
              "push_10k_vs_raw": round(push_10k / raw["import_10k_s"], 2),
              "pull_vs_raw": round(pull_1k / raw["read_1k_annotations_s"], 2)}
    local_mode = result["anchors"]["fiftyone_builtin"].get("local_files_mode", {})
    if local_mode.get("ok"):
        ratios["push_speedup_vs_builtin"] = round(local_mode["push_s"] / push_1k, 2)
        ratios["pull_speedup_vs_builtin"] = round(local_mode["load_s"] / pull_1k, 2)
    result["ratios"] = ratios
    result["target"] = TARGET
    result["pass"] = bool(max(ratios["push_1k_vs_raw"], ratios["push_10k_vs_raw"]) <= TARGET["push_vs_raw"]
                          and ratios["pull_vs_raw"] <= TARGET["pull_vs_raw"] and push_10k <= TARGET["push_10k_seconds"]
                          and min(ratios.get("push_speedup_vs_builtin", 0), ratios.get("pull_speedup_vs_builtin", 0))
                          >= TARGET["speedup_vs_builtin"])
    result["setup"] = {"n_small": N_SMALL, "n_large": N_LARGE, "repeats_1k": REPEATS, "boxes_per_image": BOXES,
                       "image_size": SIZE,
                       "threads": len(os.sched_getaffinity(0)), "load_average_1m": round(os.getloadavg()[0], 2)}
    print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
