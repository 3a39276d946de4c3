"""Model assist on hand-made regions: matching, per-class outcomes, the simulated annotator's corrections, and how
the loop report, the App panel and the CLI show the rate. No server, no FiftyOne dataset."""

from __future__ import annotations

import pytest

from curate_loop.adapters.labelstudio import assist
from curate_loop.adapters.labelstudio.mapping import Region, model_prediction, stored_region
from curate_loop.loop.simulate import corrected_regions

A = (0.10, 0.10, 0.20, 0.20)
B = (0.50, 0.50, 0.20, 0.20)
C = (0.70, 0.10, 0.20, 0.20)
FAR = (0.05, 0.70, 0.10, 0.10)


def _shift(box, dx):
    return (box[0] + dx, box[1], box[2], box[3])


def test_match_by_id_first_then_by_overlap_one_to_one():
    predicted = [Region("p1", "1", A), Region("p2", "2", B), Region("p3", "3", C)]
    annotated = [Region("x", "2", _shift(B, 0.02)), Region("p1", "1", FAR), Region("y", "3", _shift(C, 0.15))]
    # p1 by id even though its box went far away; p2 with x by IoU (0.036 / 0.044 = 0.82); p3 and y only
    # 0.01 / 0.07 = 0.14 < 0.5: no pair
    assert assist.match_regions(predicted, annotated) == [(0, 1), (1, 0)]
    # two predictions on one object: only the better one is paired
    twins = [Region("a", "1", _shift(A, 0.05)), Region("b", "1", _shift(A, 0.01))]
    assert assist.match_regions(twins, [Region("t", "1", A)]) == [(1, 0)]


def test_outcomes_per_predicted_class_and_the_rate():
    predicted = [Region("p1", "1", A), Region("p2", "2", B), Region("p3", "3", C), Region("p4", "3", FAR),
                 Region("p5", "1", _shift(C, -0.3))]
    annotated = [Region("p1", "1", A),                     # accepted (same id, class, box)
                 Region("p2", "5", B),                     # relabeled, counted under 2
                 Region("p3", "3", _shift(C, 0.01)),       # moved
                 Region("new", "7", (0.0, 0.9, 0.05, 0.05))]  # added; p4 and p5 have no counterpart: deleted
    counts = assist.count_outcomes(assist.region_outcomes(predicted, annotated))
    assert counts == {"1": {"accepted": 1, "relabeled": 0, "moved": 0, "deleted": 1, "added": 0},
                      "2": {"accepted": 0, "relabeled": 1, "moved": 0, "deleted": 0, "added": 0},
                      "3": {"accepted": 0, "relabeled": 0, "moved": 1, "deleted": 1, "added": 0},
                      "7": {"accepted": 0, "relabeled": 0, "moved": 0, "deleted": 0, "added": 1}}
    stored = assist.summarize(counts, model_version="m@1", tasks=1)
    assert stored["per_class"]["1"]["predicted"] == 2 and stored["per_class"]["7"]["predicted"] == 0
    assert stored["totals"] == {"accepted": 1, "relabeled": 1, "moved": 1, "deleted": 2, "added": 1,
                                "predicted": 5, "tasks": 1, "rate": 0.2}


def test_a_box_within_tolerance_is_accepted_and_a_class_change_outranks_a_move():
    predicted = [Region("p1", "1", A), Region("p2", "2", B)]
    annotated = [Region("p1", "1", _shift(A, 5e-7)), Region("p2", "4", _shift(B, 0.03))]
    assert assist.region_outcomes(predicted, annotated) == [("1", "accepted"), ("2", "relabeled")]
    assert assist.region_outcomes(predicted, [Region("p1", "1", _shift(A, 2e-6))])[0] == ("1", "moved")


def test_classification_pairs_its_one_label_whatever_the_id():
    kind = "classification"
    assert assist.region_outcomes([Region("p", "cat")], [Region("new", "cat")], kind=kind) == [("cat", "accepted")]
    assert assist.region_outcomes([Region("p", "cat")], [Region("p", "dog")], kind=kind) == [("cat", "relabeled")]
    assert assist.region_outcomes([Region("p", "cat")], [], kind=kind) == [("cat", "deleted")]
    assert assist.region_outcomes([], [Region("n", "dog")], kind=kind) == [("dog", "added")]


def test_merge_sums_pulls_and_skips_those_that_compared_nothing():
    one = assist.summarize({"1": {"accepted": 3, "moved": 1}}, model_version="m@1", tasks=2)
    two = assist.summarize({"1": {"deleted": 2}, "2": {"accepted": 2, "added": 1}}, model_version="m@2", tasks=3)
    empty = assist.summarize({}, model_version="m@3", tasks=0)
    merged = assist.merge([one, None, two, empty])
    assert merged["model_version"] == "m@1, m@2"
    assert merged["per_class"]["1"] == {"accepted": 3, "relabeled": 0, "moved": 1, "deleted": 2, "added": 0,
                                        "predicted": 6}
    assert merged["totals"]["rate"] == pytest.approx(5 / 8) and merged["totals"]["tasks"] == 5
    assert assist.merge([empty, None]) is None
    assert empty["totals"]["rate"] is None


def test_model_prediction_scores_regions_and_drops_unknown_classes():
    doc = {"_id": "d", "detections": [
        {"_id": "a1", "label": "1", "bounding_box": [0.1, 0.2, 0.3, 0.4], "confidence": 0.9},
        {"_id": "a2", "label": "zebra", "bounding_box": [0.5, 0.5, 0.1, 0.1], "confidence": 0.2},
        {"_id": "a3", "label": "2", "bounding_box": [0.6, 0.1, 0.2, 0.2], "confidence": 0.5}]}
    pred = model_prediction(doc, "detections", 200, 100, {"1", "2"})
    assert [r["id"] for r in pred.result] == ["a1", "a3"] and [r["score"] for r in pred.result] == [0.9, 0.5]
    assert pred.result[0]["value"]["x"] == pytest.approx(10.0) and pred.result[0]["original_width"] == 200
    assert pred.dropped == {"zebra": 1} and pred.score == pytest.approx(0.7)
    assert stored_region(pred.regions[1]) == Region("a3", "2", (0.6, 0.1, 0.2, 0.2))
    empty = model_prediction({"_id": "e", "detections": []}, "detections", 10, 10, {"1"})
    assert (empty.result, empty.score) == ([], None)
    one = model_prediction({"_id": "c", "label": "2", "confidence": 0.25}, "classification", 10, 10, {"2"})
    assert one.result[0]["value"] == {"choices": ["2"]} and one.result[0]["score"] == 0.25


def test_simulated_corrections_give_back_exactly_the_planted_outcomes():
    true = [Region("t1", "1", A), Region("t2", "2", B), Region("t3", "3", C), Region("t4", "4", FAR)]
    predicted = [Region("p1", "1", A),                 # exact -> accepted
                 Region("p2", "5", B),                 # wrong class -> relabeled (under 5)
                 Region("p3", "3", _shift(C, 0.02)),   # shifted -> moved
                 Region("p9", "6", (0.0, 0.9, 0.05, 0.05))]  # nothing there -> deleted; t4 -> added
    answer = corrected_regions(predicted, true)
    assert answer == [Region("p1", "1", A), Region("p2", "2", B), Region("p3", "3", C), true[3]]
    counts = assist.count_outcomes(assist.region_outcomes(predicted, answer))
    assert {cls: {k: n for k, n in row.items() if n} for cls, row in counts.items()} == \
        {"1": {"accepted": 1}, "5": {"relabeled": 1}, "3": {"moved": 1}, "6": {"deleted": 1}, "4": {"added": 1}}
    assert corrected_regions([Region("p", "cat")], [Region("t", "dog")], kind="classification") == \
        [Region("p", "dog", None)]


def _history():
    one = assist.summarize({"1": {"accepted": 3, "relabeled": 1}, "2": {"deleted": 1, "added": 2}},
                           model_version="linear_probe@1", tasks=4)
    return [
        {"iteration": 1, "batch": "batch_01", "pulled": {}, "selected": 5, "pushed": 5, "model": None},
        {"iteration": 2, "batch": "batch_02", "selected": 5, "pushed": 5,
         "model": {"kind": "builtin", "name": "linear_probe", "field": "predictions", "trained_on": 20,
                   "predicted": 40, "seconds": 0.4, "cv_accuracy": 0.62, "model_version": "linear_probe@2"},
         "pulled": {"batch_01": {"applied": 4, "model_assist": one}}},
        {"iteration": 3, "batch": "batch_03", "selected": 5, "pushed": 5,
         "model": {"kind": "builtin", "name": "linear_probe", "field": "predictions", "trained_on": 30,
                   "predicted": 35, "seconds": 0.5, "cv_accuracy": 0.81, "model_version": "linear_probe@3"},
         "pulled": {"batch_02": {"applied": 5}}},
    ]


def test_loop_report_shows_the_model_the_accuracy_curve_and_the_assist_rate():
    from curate_loop.loop.report import model_assist_rows, render_loop_report

    page = render_loop_report(_history(), {"batches": []}, dataset_name="d")
    assert "<h2>Model</h2>" in page and "aria-label=\"model accuracy against the labels it was trained on\"" in page
    assert "<td>linear_probe@2</td><td>20</td><td>40</td><td>62.0%</td>" in page
    assert page.count("class=\"accuracy\"") == 1 and page.count("fill=\"#1971c2\"") == 2
    # iteration 2's pull: 3 of 5 predicted regions accepted; class 1: 3 of 4; class 2: 0 of 1 (2 added)
    assert ("<tr><td>2</td><td>linear_probe@1</td><th>all</th><td>5</td><td>3</td><td>1</td><td>0</td><td>1</td>"
            "<td>2</td><td>60.0%</td></tr>") in page
    assert "<td>1</td><td>4</td><td>3</td><td>1</td><td>0</td><td>0</td><td>0</td>" \
        "<td>75.0%</td>" in page
    assert [r["assist"] is None for r in model_assist_rows(_history())] == [True, False, True]


def test_loop_report_without_a_model_says_so():
    from curate_loop.loop.report import render_loop_report

    page = render_loop_report([{"iteration": 1, "batch": "b", "pulled": {}}], {"batches": []}, dataset_name="d")
    assert "No model step yet" in page and "model accuracy" not in page


def test_panel_line_per_iteration_with_the_assist_rate():
    from curate_loop.plugin.loop import _iterations_md

    text = _iterations_md({"iterations": _history()})
    lines = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(lines) == 3
    assert lines[1].endswith("| linear_probe, on 20 labels, cv 62% | 60% (3/5 accepted) |")
    assert lines[0].endswith("| – | – |") and lines[2].endswith("| – |")


def test_cli_lines_after_a_pull():
    from curate_loop.cli.labelstudio import model_assist_lines

    lines = model_assist_lines(_history()[1]["pulled"]["batch_01"]["model_assist"])
    assert lines[0] == ("  model assist (linear_probe@1, 4 tasks): 3 of 5 predicted regions accepted (60%); "
                        "1 relabeled, 0 moved, 1 deleted; 2 added.")
    assert lines[2].split() == ["1", "4", "3", "1", "0", "0", "0"]
    assert model_assist_lines(None) == []
