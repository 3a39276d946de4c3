"""Label Studio sync: our push and pull against the server's own limit (plain httpx) and FiftyOne's built-in backend.

What each timing covers (wall clock, ``time.perf_counter`` around one call):

- ``ours`` push: the whole ``push_batch`` of a batch never pushed before (so into a fresh project): reading the
  batch from FiftyOne, building the task JSON, finding/creating the project, its local-files storage and its tab,
  the import POSTs (``CHUNK_SIZE`` tasks each), and recording the task ids on the dataset.
- ``httpx`` push (the server's limit): ONE ``POST /api/projects/{id}/import?return_task_ids=true`` sent with plain
  httpx, carrying exactly the task JSON our push sends for the same samples (same data, same predictions), already
  serialised, into a fresh project (made beforehand, untimed) with the same label config; the answer is parsed.
  Building and serialising the JSON is not timed: the anchor is the server taking the tasks, nothing else.
- ``ours`` pull: the whole ``pull_batch`` of an annotated batch: reading its annotations (the project's JSON export
  filtered to the batch's task ids, ``EXPORT_CHUNK`` ids per request), user names, reconciling, writing the labels
  to FiftyOne and recording the pull (undone, untimed, between runs so that each run changes every sample).
- ``httpx`` pull (the server's limit): the same export requests our pull makes (same endpoint, parameters and id
  chunks), sent with plain httpx and each answer parsed with ``json.loads``; and, as a second variant, one export
  request for the whole project (it holds exactly the batch). The anchor is whichever variant has the lower median.
- ``builtin``: FiftyOne's own backend at its best, local-files mode (its default upload mode sends every image in
  one request, which the server refuses past 100 files; it is tried once and reported): ``annotate(backend=
  "labelstudio")`` for push, ``load_annotations`` for pull, at 1,000 tasks only (it is slow).

Each figure is the median of ``ROUNDS`` interleaved rounds (in round ``r`` the contenders run in an order rotated by
``r``), every run printed to stderr and listed in the BENCH line with min and max. Annotations are made on the server
in one request with the Data Manager action "predictions to annotations", for every contender alike. Everything runs
against one local Label Studio server the bench starts (its own data dir, local-files root = the bench's media
folder) and a throwaway FiftyOne database in its own folder. stdout gets the one ``BENCH {json}`` line.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

N_SMALL, N_LARGE, BOXES, SIZE, SEED = 1_000, 10_000, 3, (64, 48), 0
ROUNDS = 5
HTTP_TIMEOUT_S = 600.0
TARGET = {"push_1k_vs_httpx": 1.3, "push_10k_vs_httpx": 1.15, "pull_1k_vs_httpx": 1.3, "pull_10k_vs_httpx": 1.3,
          "push_speedup_vs_builtin": 3.0, "pull_speedup_vs_builtin": 3.0}


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


def _stats(runs: list[float]) -> dict:
    return {"median_s": round(statistics.median(runs), 3), "min_s": round(min(runs), 3), "max_s": round(max(runs), 3),
            "runs_s": [round(t, 3) for t in runs]}


def _rounds(what: str, contenders: dict, before: dict | None = None) -> tuple[dict, dict]:
    """``ROUNDS`` rounds of ``contenders`` (name -> ``fn(r)``), their order rotated by ``r``; ``before[name](r)``
    runs untimed first. Returns ``(times per name, values per name)``; a contender that raises is dropped from later
    rounds and its error is its last value."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    values: dict[str, list] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(ROUNDS):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if values[name] and isinstance(values[name][-1], Exception):
                continue
            if before and name in before:
                before[name](r)
            started = time.perf_counter()
            try:
                values[name].append(contenders[name](r))
            except Exception as exc:  # noqa: BLE001 - a competitor's failure is the measurement
                values[name].append(exc)
                _log(f"{what} round {r} {name}: failed: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            times[name].append(time.perf_counter() - started)
            _log(f"{what} round {r} {name}: {times[name][-1]:.2f} s")
    return times, values


def _raw_import(client, project_id: int, body: bytes, headers: dict) -> list[int]:
    """The server's limit for a push: one import POST of the already serialised task JSON."""
    response = client.post(f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, content=body,
                           headers={**headers, "Content-Type": "application/json"})
    response.raise_for_status()
    return json.loads(response.content)["task_ids"]


def _raw_export(client, project_id: int, task_ids: list[int] | None, chunk: int, headers: dict) -> list[dict]:
    """The server's limit for a pull: the export requests our pull makes (``task_ids`` in chunks of ``chunk``), or
    one export of the whole project when ``task_ids`` is None; every answer parsed."""
    params = {"exportType": "JSON", "download_all_tasks": "true"}
    if task_ids is None:
        response = client.get(f"/api/projects/{project_id}/export", params=params, headers=headers)
        response.raise_for_status()
        return json.loads(response.content)
    ids, tasks = sorted(task_ids), []
    for start in range(0, len(ids), chunk):
        response = client.get(f"/api/projects/{project_id}/export",
                              params={**params, "ids[]": ids[start:start + chunk]}, headers=headers)
        response.raise_for_status()
        tasks.extend(json.loads(response.content))
    return tasks


def _ratio(slow: dict | None, fast: dict | None) -> float | None:
    """``slow``'s median over ``fast``'s; None when either did not run."""
    if "median_s" not in (slow or {}) or "median_s" not in (fast or {}):
        return None
    return round(slow["median_s"] / fast["median_s"], 3)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="curate-loop-bench-ls-"))
    from bench.throwaway_db import use_throwaway_database

    use_throwaway_database("labelstudio")
    import fiftyone as fo
    import fiftyone.core.odm.database as fodb
    import httpx

    from curate_loop.adapters.labelstudio import tasks as ls_tasks
    from curate_loop.adapters.labelstudio.client import Connection
    from curate_loop.adapters.labelstudio.labelconfig import label_config
    from curate_loop.adapters.labelstudio.server import start_label_studio
    from curate_loop.runs import labelstudio as sync

    fo.config.show_progress_bars = False
    pid = os.getpid()
    media = work / "media"
    _log("making media")
    paths = _make_media(media / "images", N_LARGE)
    _log("starting Label Studio (first start migrates its database, ~30-60 s)")
    server = start_label_studio(data_dir=work / "labelstudio", document_root=media)
    conn = Connection(server.url, server.token)
    raw = httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S)  # keep-alive: plain httpx at its best
    headers = conn._headers()  # the auth header our client sends
    kw = {"url": server.url, "api_key": server.token, "document_root": media}
    read_kw = {"url": server.url, "api_key": server.token}
    sizes = {"1k": N_SMALL, "10k": N_LARGE}
    result: dict = {"name": "labelstudio_sync"}
    try:
        _log("making datasets")
        bases = {"1k": _dataset(f"bench-ls-1k-{pid}", paths[:N_SMALL]), "10k": _dataset(f"bench-ls-10k-{pid}", paths)}
        # a dataset copy per round: each push of ours goes to a fresh project, as the raw import does
        copies = {size: [base.clone(f"{base.name}-{r}") for r in range(ROUNDS)] for size, base in bases.items()}
        builtins = [bases["1k"].clone(f"bench-ls-builtin-{pid}-{r}") for r in range(ROUNDS)]
        os.environ["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"  # the built-in backend's local-files mode
        os.environ["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(media)

        # The exact task JSON and label config our push sends, serialised once; a fresh project per raw import.
        config = label_config("detections", sync._classes(bases["10k"], "ground_truth", "detections", None))
        bodies, raw_projects = {}, {}
        for size, base in bases.items():
            built = sync._build_tasks(base, sync.batch_members(base, "bench"), "bench", "ground_truth", "detections",
                                      ls_tasks.document_root(media))
            bodies[size] = json.dumps(built["tasks"]).encode()
        pushes: list = []  # the built-in backend's annotation results, one per round

        # -- push: ours, httpx, built-in (1k) -------------------------------------------------------------------
        result["push"] = {}
        for size in sizes:
            def ours(r, size=size):
                return sync.push_batch(copies[size][r], "bench", "ground_truth", **kw)

            def make_raw_project(r, size=size):
                raw_projects[size, r] = conn.sdk.projects.create(title=f"raw import {size} {r}",
                                                                 label_config=config).id

            def httpx_push(r, size=size):
                ids = _raw_import(raw, raw_projects[size, r], bodies[size], headers)
                if len(ids) != sizes[size]:
                    raise RuntimeError(f"the raw import created {len(ids)} tasks, not {sizes[size]}")
                return ids

            contenders = {"ours": ours, "httpx": httpx_push}
            if size == "1k":
                contenders["builtin"] = lambda r: builtins[r].annotate(
                    "local", backend="labelstudio", label_field="ground_truth", url=server.url, api_key=server.token)
            times, values = _rounds(f"push {size}", contenders, before={"httpx": make_raw_project})
            result["push"][size] = {name: _stats(t) if t else {"error": repr(values[name][-1])[:300]}
                                    for name, t in times.items()}
            result["push"][size]["ours"]["tasks"] = values["ours"][-1].tasks
            if size == "1k":
                pushes = values["builtin"]

        # -- pull: annotate everything once, then ours, httpx (same requests / one request), built-in (1k) ------
        _log("annotating on the server")
        pull_sets = {size: copies[size][0] for size in sizes}
        for size, dataset in pull_sets.items():
            _annotate_all(conn, sync._load_record(dataset, "bench")["project_id"])
        builtin_ok = len(pushes) == ROUNDS and not any(isinstance(v, Exception) for v in pushes)
        if builtin_ok:
            for results in pushes:
                _annotate_all(conn, results.project_id)
        result["pull"] = {}
        for size, dataset in pull_sets.items():
            record = sync._load_record(dataset, "bench")
            project_id, task_ids = record["project_id"], list(record["task_ids"].values())

            def ours(r, dataset=dataset):
                return sync.pull_batch(dataset, "bench", **read_kw)

            def undo(r, dataset=dataset):
                if sync.pulls(dataset, "bench"):
                    sync.undo_pull(dataset, "bench")

            def same_requests(r, project_id=project_id, task_ids=task_ids):
                return len(_raw_export(raw, project_id, task_ids, ls_tasks.EXPORT_CHUNK, headers))

            def one_request(r, project_id=project_id):
                return len(_raw_export(raw, project_id, None, 0, headers))

            contenders = {"ours": ours, "httpx_same_requests": same_requests, "httpx_one_request": one_request}
            if size == "1k" and builtin_ok:
                contenders["builtin"] = lambda r: builtins[r].load_annotations("local", url=server.url,
                                                                               api_key=server.token)
            times, values = _rounds(f"pull {size}", contenders, before={"ours": undo})
            stats = {name: _stats(t) if t else {"error": repr(values[name][-1])[:300]} for name, t in times.items()}
            variants = {"same_requests": stats.pop("httpx_same_requests"), "one_request": stats.pop("httpx_one_request")}
            best = min(variants, key=lambda v: variants[v].get("median_s", float("inf")))
            stats["httpx"] = {**variants[best], "variant": best,
                              "other_variant": {k: v for k, v in variants.items() if k != best}}
            stats["ours"].update(applied=[v.applied for v in values["ours"]],
                                 changed=[v.changed_samples for v in values["ours"]])
            stats["httpx"]["tasks_read"] = values[f"httpx_{best}"][-1]
            result["pull"][size] = stats
        if not builtin_ok:
            result["pull"]["1k"]["builtin"] = {"error": "push failed, nothing to load"}

        # -- the built-in backend's default (upload) mode, once: it sends every image in one request -----------
        upload = bases["1k"].clone(f"bench-ls-builtin-upload-{pid}")
        before_ids = {p.id for p in conn.sdk.projects.list()}
        os.environ.pop("LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED")
        os.environ.pop("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
        started = time.perf_counter()
        try:
            upload.annotate("upload", backend="labelstudio", label_field="ground_truth", url=server.url,
                            api_key=server.token)
            upload_mode = {"ok": True, "push_s": round(time.perf_counter() - started, 2)}
        except Exception as exc:  # noqa: BLE001 - the competitor's failure is the measurement
            left = [p for p in conn.sdk.projects.list() if p.id not in before_ids]
            upload_mode = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}",
                           "projects_left_behind": len(left), "tasks_in_them": sum(p.task_number or 0 for p in left)}
        _log(f"built-in upload mode (once): {upload_mode}")
        result["builtin_upload_mode_1k"] = upload_mode
    finally:
        raw.close()
        conn.close()
        server.stop()
        fodb.drop_database()
        shutil.rmtree(work, ignore_errors=True)

    push, pull = result["push"], result["pull"]
    ratios = {"push_1k_vs_httpx": _ratio(push["1k"]["ours"], push["1k"]["httpx"]),
              "push_10k_vs_httpx": _ratio(push["10k"]["ours"], push["10k"]["httpx"]),
              "pull_1k_vs_httpx": _ratio(pull["1k"]["ours"], pull["1k"]["httpx"]),
              "pull_10k_vs_httpx": _ratio(pull["10k"]["ours"], pull["10k"]["httpx"]),
              "push_speedup_vs_builtin": _ratio(push["1k"].get("builtin"), push["1k"]["ours"]),
              "pull_speedup_vs_builtin": _ratio(pull["1k"].get("builtin"), pull["1k"]["ours"])}
    met = {}
    for key, bound in TARGET.items():
        value = ratios[key]
        met[key] = value is not None and (value >= bound if "speedup" in key else value <= bound)
    result.update(ratios=ratios, target=TARGET, met=met, anchor="httpx", rounds=ROUNDS)
    result["pass"] = all(met.values())
    result["covers"] = {
        "ours_push": "whole push_batch into a fresh project: FiftyOne read, task JSON, project+storage+tab, "
                     "import POSTs, task ids recorded",
        "httpx_push": "one plain-httpx import POST of the same task JSON (pre-serialised) into a fresh project "
                      "with the same label config",
        "ours_pull": "whole pull_batch: export reads, users, reconcile, FiftyOne write, pull recorded",
        "httpx_pull": "the same export requests as ours (or one whole-project export, whichever is faster) "
                      "with plain httpx, answers json.loads'ed",
        "builtin": "FiftyOne annotate(backend='labelstudio') local-files mode / load_annotations",
    }
    result["setup"] = {"n_small": N_SMALL, "n_large": N_LARGE, "boxes_per_image": BOXES, "image_size": SIZE,
                       "import_chunk": ls_tasks.CHUNK_SIZE, "export_chunk": ls_tasks.EXPORT_CHUNK,
                       "threads": len(os.sched_getaffinity(0)), "load_average_1m": round(os.getloadavg()[0], 2)}
    print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
