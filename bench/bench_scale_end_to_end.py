"""The FiftyOne glue at scale: a FiftyOne dataset of 100k, 300k and 1M samples with brought-in 512-d vectors,
taken through the steps the loop runs, end to end on this machine, each step timed with its peak memory.

Data: the planted Gaussian mixture of :mod:`bench.bench_curation_scale` (``planted_mixture``: 1,000 Zipf-sized
clusters, near-duplicate groups, outliers), one row per sample. 1% of the samples start labeled (a
``Classification`` in ``ground_truth``: its known cluster's class), so the pool state has something to read.

Steps per size, each in the order the loop runs them (the functions it calls):

- ``create`` (the user's dataset, NOT part of ``total``): ``fo.Dataset`` of samples with fake filepaths (under a
  media folder; no file exists yet) and their ``metadata`` (64x64), documents shaped by ``add_samples`` and
  inserted in bulk (``_create_dataset``);
- ``import``: ``runs.embeddings.import_embeddings`` from a ``.npy`` of the vectors (saved untimed);
- ``edges``: ``runs.edges.score_edge_cases`` (clusters + edge scores, written in bulk, the ``edge_cases`` view);
- ``select``: ``runs.curation.select_batch`` of a 10k batch (``BATCH`` or a tenth of the pool, whichever is smaller),
  with its HTML report as the loop makes it;
- ``push``: ``runs.labelstudio.push_batch`` to a local Label Studio server (started once, like the tests'
  ``labelstudio`` fixture). Untimed before it: the batch's image files are made (hard links to one tiny JPEG);
- ``annotate``: a simulated annotator answers ``ANNOTATED`` (1,000) of the batch's tasks, one HTTP request per task
  through Label Studio's API as a person's submit would (four at a time). It stands for people's work and is NOT
  part of ``total``;
- ``pull``: ``runs.labelstudio.pull_batch`` (it reads every task of the batch and applies the answered ones);
- ``similarity``: ``runs.similarity.build_similarity`` (faiss backend) + one ``sort_by_similarity`` query (k=100,
  the ids read back).

Each size runs in its own child process, in a throwaway FiftyOne database (``curate-loop-bench-e2e-<pid>``) on a
mongod the child starts itself (``<curate-loop home>/bench/e2e-<pid>/mongodb-<n>``), dropped at the end. Memory per step: the peak
resident set of the child (``VmHWM``, reset before each step through ``/proc/self/clear_refs``) plus the peaks of
mongod and (for the Label Studio steps) the Label Studio server's processes, read and reset the same way: ``gb``
is the sum of those peaks (an upper bound of what the step held at once). Growth: per step, the exponent
``log(t_big / t_small) / log(n_big / n_small)`` between the smallest and the largest size (100k and 1M by
default); 1.0 is linear, n log n over 100k..1M is ~1.1.

Target (the issue's): 1M end to end (``total``, without ``create`` and ``annotate``) <= 900 s and <= 10 GB peak, and no step
growing faster than n log n (exponent <= 1.15, steps under 2 s at the large size excepted: their times are noise).
``CURATE_LOOP_BENCH_E2E_SIZES`` (e.g. ``"10000,30000"``) runs other sizes for a quick check. Progress goes to
stderr; stdout gets the one ``BENCH {json}`` line.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = [int(s) for s in os.environ.get("CURATE_LOOP_BENCH_E2E_SIZES", "100000,300000,1000000").split(",") if s]
DIM, SEED = 512, 0
BATCH = 10_000
ANNOTATED, ANNOTATOR_THREADS = 1_000, 4  # tasks the simulated annotator answers (the pull reads all the batch's)
LABELED_SHARE = 0.01
N_CLASSES = 10
KEY, BATCH_NAME, LABEL_FIELD = "e2e", "batch_01", "ground_truth"
STEPS = ("create", "import", "edges", "select", "push", "annotate", "pull", "similarity")
NOT_IN_TOTAL = ("create", "annotate")  # the user's dataset, and people's work
GROWTH_FROM = 100_000
TARGET = {"total_seconds_1m": 900, "peak_gb_1m": 10.0, "max_growth_exponent": 1.15}
NOISE_FLOOR_S = 2.0  # steps shorter than this at the largest size are not judged on their growth
CHILD_TIMEOUT_S = 1800


# -- memory --------------------------------------------------------------------------------------------------------
def _status_kb(pid: int | str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return 0


def _reset_peak(pid: int | str) -> bool:
    """Reset a process's ``VmHWM`` to its current RSS (Linux >= 4.0); False where we may not."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMeter:
    """The summed peak RSS of this process and the others given (mongod, Label Studio), per step."""

    def __init__(self, others: dict[str, list[int]]):
        self.others = others  # name -> pids

    def start(self) -> None:
        for pid in ["self", *[p for pids in self.others.values() for p in pids]]:
            _reset_peak(pid)

    def read(self, with_labelstudio: bool) -> dict[str, float]:
        peaks = {"bench": _status_kb("self", "VmHWM") / 2 ** 20}
        for name, pids in self.others.items():
            if name == "labelstudio" and not with_labelstudio:
                continue
            peaks[name] = sum(_status_kb(p, "VmHWM") for p in pids) / 2 ** 20
        return peaks


def _tree_pids(pid: int) -> list[int]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root.pid] + [c.pid for c in root.children(recursive=True)]
    except psutil.Error:
        return []


# -- one size, in a child process ----------------------------------------------------------------------------------
def _child(n: int, media_root: str, db_dir: str, ls_url: str, ls_key: str, ls_pid: int) -> None:
    """Runs every step on ``n`` samples; prints ``STEP {json}`` per step and ``SIZE {json}`` at the end."""
    from bench.throwaway_db import use_throwaway_database

    _, mongod = use_throwaway_database("e2e", db_dir)
    import fiftyone as fo
    import fiftyone.core.odm.database as fodb

    from bench.bench_curation_scale import planted_mixture

    fo.config.show_progress_bars = False
    started = time.perf_counter()
    data = planted_mixture(n=n)
    vectors, clusters = data["vectors"], data["labels"]
    del data
    print(f"[{n:,}] mixture generated in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    media = Path(media_root) / f"e2e-{n}"
    media.mkdir(parents=True, exist_ok=True)
    classes = [f"class_{c}" for c in range(N_CLASSES)]
    class_of = np.where(clusters >= 0, clusters % N_CLASSES, 0)
    k = min(BATCH, n // 10)

    fodb.get_db_conn()
    meter = PeakMeter({"mongod": [mongod.pid], "labelstudio": _tree_pids(ls_pid)})
    steps: dict[str, dict] = {}
    out: dict = {}

    def step(name, call, with_labelstudio=False):
        meter.start()
        t0 = time.perf_counter()
        out[name] = call()
        seconds = time.perf_counter() - t0
        peaks = meter.read(with_labelstudio)
        steps[name] = {"seconds": round(seconds, 2), "gb": round(sum(peaks.values()), 3),
                       "gb_by_process": {p: round(v, 3) for p, v in peaks.items()}}
        print("STEP " + json.dumps({"n": n, "step": name, **steps[name]}), file=sys.stderr, flush=True)

    dataset = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            npy = str(Path(tmp) / "vectors.npy")
            np.save(npy, vectors)
            del vectors

            def create():
                return _create_dataset(n, media, classes, class_of)

            from curate_loop.runs.curation import select_batch
            from curate_loop.runs.edges import score_edge_cases
            from curate_loop.runs.embeddings import import_embeddings

            step("create", create)
            dataset = out["create"]
            step("import", lambda: import_embeddings(dataset, KEY, npy))
        step("edges", lambda: score_edge_cases(dataset, KEY, seed=SEED))
        step("select", lambda: select_batch(dataset, BATCH_NAME, k, KEY, label_field=LABEL_FIELD, seed=SEED))

        # untimed: the batch's images appear (hard links to one tiny JPEG); its true classes are known
        picked = out["select"].sample_ids
        _make_batch_files(dataset, picked, media)
        ids = dataset.values("id")
        row = {sample_id: i for i, sample_id in enumerate(ids)}

        from curate_loop.runs.labelstudio import pull_batch, push_batch

        ls = {"url": ls_url, "api_key": ls_key}
        step("push", lambda: push_batch(dataset, BATCH_NAME, LABEL_FIELD, document_root=media_root, classes=classes,
                                        **ls), with_labelstudio=True)
        truth = {sid: classes[class_of[row[sid]]] for sid in picked}
        step("annotate", lambda: annotate(out["push"].project_id, truth, **ls), with_labelstudio=True)
        step("pull", lambda: pull_batch(dataset, BATCH_NAME, **ls), with_labelstudio=True)

        def similarity():
            from curate_loop.runs.similarity import build_similarity

            brain_key = build_similarity(dataset, KEY)
            query = picked[0]
            return dataset.sort_by_similarity(query, k=100, brain_key=brain_key).values("id")

        step("similarity", similarity)
        checks = {"batch": out["select"].picked, "pool_size": out["select"].pool_size,
                  "tasks_pushed": out["push"].tasks, "annotated": out["annotate"], "pulled_applied": out["pull"].applied,
                  "labeled_after_pull": len(dataset.exists(LABEL_FIELD)), "similar_returned": len(out["similarity"]),
                  "query_first": out["similarity"][0] == picked[0] if out["similarity"] else False,
                  "clusters": out["edges"].clusters}
    finally:
        if dataset is not None:
            dataset.delete()
        fodb.drop_database()
        mongod.terminate()
        mongod.wait(120)
    total = round(sum(s["seconds"] for name, s in steps.items() if name not in NOT_IN_TOTAL), 2)
    peak = round(max(s["gb"] for name, s in steps.items() if name not in NOT_IN_TOTAL), 3)
    print("SIZE " + json.dumps({"n": n, "k": k, "steps": steps, "total_seconds": total, "peak_gb": peak,
                                "checks": checks}), flush=True)


def annotate(project_id: int, truth: dict[str, str], *, url: str, api_key: str) -> int:
    """The simulated annotator's work on ``ANNOTATED`` tasks of the batch: one annotation per task through Label
    Studio's HTTP API (``POST /api/tasks/<id>/annotations``, what a person's submit sends), ``ANNOTATOR_THREADS`` at
    a time. Returns how many were annotated."""
    from concurrent.futures import ThreadPoolExecutor

    from curate_loop.adapters.labelstudio import tasks as ls_tasks
    from curate_loop.adapters.labelstudio.client import SAMPLE_KEY, connect
    from curate_loop.adapters.labelstudio.mapping import classification_region

    with connect(url, api_key) as conn:
        tasks = ls_tasks.batch_tasks(conn, project_id, BATCH_NAME, include="id,data")[:ANNOTATED]

        def answer(task):
            label = truth[task["data"][SAMPLE_KEY]]
            conn.sdk.annotations.create(id=task["id"], result=[classification_region(f"r{task['id']}", label)],
                                        was_cancelled=False, lead_time=1.0)

        with ThreadPoolExecutor(ANNOTATOR_THREADS) as pool:
            list(pool.map(answer, tasks))
    return len(tasks)


def _create_dataset(n: int, media: Path, classes: list[str], class_of: np.ndarray):
    """The user's dataset: ``n`` samples (fake filepaths, 64x64 ``metadata``), ``LABELED_SHARE`` of them labeled.

    Two samples go in through ``add_samples`` (so FiftyOne declares the schema and shapes the documents); the
    rest are copies of those two documents with their own ids, paths and labels, inserted ``insert_many`` in
    chunks. ``add_samples`` builds a Python ``Sample`` per row (~15 min for 1M here): the dataset is the user's,
    not a step of the loop, so the bench does not spend its time building it the slow way."""
    import fiftyone as fo
    from bson import ObjectId

    labeled = np.zeros(n, dtype=bool)
    labeled[np.random.default_rng(SEED).choice(n, int(n * LABELED_SHARE), replace=False)] = True
    labeled[:2] = [False, True]  # the two templates: one without a label, one with
    ds = fo.Dataset(f"bench-e2e-{n}-{os.getpid()}")
    meta = fo.ImageMetadata(width=64, height=64)
    ds.add_samples([fo.Sample(filepath=str(media / f"{i:07d}.jpg"), metadata=meta.copy(),
                              **({LABEL_FIELD: fo.Classification(label=classes[class_of[i]])} if labeled[i] else {}))
                    for i in range(2)], progress=False)
    collection = ds._sample_collection
    plain, with_label = (collection.find_one({"filepath": str(media / f"{i:07d}.jpg")}) for i in range(2))
    chunk = 50_000
    for start in range(2, n, chunk):
        docs = []
        for i in range(start, min(start + chunk, n)):
            doc = dict(with_label if labeled[i] else plain, _id=ObjectId(), filepath=str(media / f"{i:07d}.jpg"))
            if labeled[i]:
                doc[LABEL_FIELD] = dict(with_label[LABEL_FIELD], _id=ObjectId(), label=classes[class_of[i]])
            docs.append(doc)
        collection.insert_many(docs, ordered=False)
    if len(ds) != n:
        raise RuntimeError(f"the bench dataset has {len(ds)} samples, expected {n}")
    return ds


def _make_batch_files(dataset, sample_ids: list[str], media: Path) -> None:
    jpeg = media / "_tiny.jpg"
    if not jpeg.exists():
        from PIL import Image

        Image.new("RGB", (64, 64), (128, 128, 128)).save(jpeg, quality=50)
    for path in dataset.select(sample_ids).values("filepath"):
        if not os.path.exists(path):
            os.link(jpeg, path)


def _run_size(n: int, media_root: Path, db_dir: Path, server) -> dict:
    code = ("from bench.bench_scale_end_to_end import _child; "
            f"_child({n}, {str(media_root)!r}, {str(db_dir)!r}, {server.url!r}, {server.token!r}, "
            f"{server.process.pid})")
    started = time.perf_counter()
    log = media_root / f"child-{n}.log"
    with open(log, "w") as err:
        try:
            proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                                  stdout=subprocess.PIPE, stderr=err, text=True, timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"n": n, "error": f"no answer after {time.perf_counter() - started:.0f} s (killed)",
                    "steps": _steps_from_log(log)}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SIZE ")]
    if proc.returncode != 0 or not lines:
        tail = log.read_text()[-800:]
        return {"n": n, "error": f"exit {proc.returncode}: {tail}", "steps": _steps_from_log(log)}
    return json.loads(lines[-1][len("SIZE "):])


def _steps_from_log(log: Path) -> dict:
    """The steps a failed child finished, from its progress lines."""
    steps = {}
    for line in log.read_text().splitlines():
        if line.startswith("STEP "):
            row = json.loads(line[len("STEP "):])
            steps[row.pop("step")] = row
    return steps


def growth(results: list[dict]) -> dict:
    """Per step, ``log(t_big / t_small) / log(n_big / n_small)`` between the smallest and largest finished size of
    at least ``GROWTH_FROM`` samples (100k: smaller pools are below the sizes the target speaks of), and between
    each pair of consecutive finished sizes."""
    done = [r for r in results if "error" not in r]
    judged = [r for r in done if r["n"] >= GROWTH_FROM] or done

    def exponents(small, big):
        ratio = math.log(big["n"] / small["n"])
        out = {name: round(math.log(max(big["steps"][name]["seconds"], 0.01)
                                    / max(small["steps"][name]["seconds"], 0.01)) / ratio, 3) for name in STEPS}
        out["total"] = round(math.log(big["total_seconds"] / small["total_seconds"]) / ratio, 3)
        return out

    if len(judged) < 2:
        return {}
    return {"between": [judged[0]["n"], judged[-1]["n"]], "exponents": exponents(judged[0], judged[-1]),
            "pairs": {f"{a['n']}-{b['n']}": exponents(a, b) for a, b in zip(done, done[1:])}}


def main() -> dict:
    from curate_loop.adapters.labelstudio.server import start_label_studio
    from curate_loop.paths import curate_loop_home

    load_before = os.getloadavg()[0]
    work = curate_loop_home() / "bench" / f"e2e-{os.getpid()}"
    media_root = work / "media"
    media_root.mkdir(parents=True, exist_ok=True)
    print(f"starting Label Studio (data in {work / 'labelstudio'})", file=sys.stderr, flush=True)
    server = start_label_studio(data_dir=work / "labelstudio", document_root=media_root)
    results = []
    try:
        for n in SIZES:
            print(f"== {n:,} samples", file=sys.stderr, flush=True)
            results.append(_run_size(n, media_root, work / f"mongodb-{n}", server))
            r = results[-1]
            print(f"== {n:,}: total {r.get('total_seconds')} s, peak {r.get('peak_gb')} GB "
                  f"{r.get('error', '')[:300]}", file=sys.stderr, flush=True)
    finally:
        server.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)

    curve = growth(results)
    largest = results[-1]
    big_steps = largest.get("steps", {})
    slow_growth = [name for name, e in curve.get("exponents", {}).items()
                   if name in STEPS and name not in NOT_IN_TOTAL and e > TARGET["max_growth_exponent"]
                   and big_steps.get(name, {}).get("seconds", 0) >= NOISE_FLOOR_S]
    at_1m = next((r for r in results if r["n"] == 1_000_000 and "error" not in r), None)
    dominant = (max((n for n in big_steps if n not in NOT_IN_TOTAL), key=lambda n: big_steps[n]["seconds"])
                if big_steps else None)
    passed = (at_1m is not None and at_1m["total_seconds"] <= TARGET["total_seconds_1m"]
              and at_1m["peak_gb"] <= TARGET["peak_gb_1m"] and not slow_growth
              and all("error" not in r for r in results))
    result = {
        "name": "scale_end_to_end_1m",
        "sizes": {str(r["n"]): r for r in results},
        "growth": curve,
        "steps_growing_faster_than_nlogn": slow_growth,
        "dominant_step_at_largest": dominant,
        "target": TARGET,
        "pass": bool(passed),
        "setup": {"sizes": SIZES, "dim": DIM, "batch": BATCH, "labeled_share": LABELED_SHARE, "seed": SEED,
                  "memory": "per step: VmHWM of the bench child + mongod (+ Label Studio's processes for push, "
                            "annotate, pull), each reset before the step via /proc/<pid>/clear_refs",
                  "not_in_total": list(NOT_IN_TOTAL), "threads": len(os.sched_getaffinity(0)),
                  "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
    }
    print("BENCH " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
