"""The iteration report from a made-up loop history: label changes per iteration and the saturation curve."""

from curate_loop.loop.report import label_changes, render_loop_report

HISTORY = [
    {"iteration": 1, "batch": "batch_01", "pulled": {}, "selected": 10, "pushed": 10, "suspects": None,
     "mislabel_decisions": {"accepted": 0, "rejected": 0, "reannotate": 0}},
    {"iteration": 2, "batch": "batch_02", "selected": 10, "pushed": 10, "suspects": 4, "simulated_answers": 10,
     "pulled": {"batch_01": {"applied": 9, "labels_updated": 3, "labels_added": 20, "labels_removed": 1,
                             "cancelled": 1, "conflicts": 2}},
     "mislabel_decisions": {"accepted": 2, "rejected": 1, "reannotate": 0}},
    {"iteration": 3, "batch": "batch_03", "selected": 5, "pushed": 5, "suspects": 3,
     "pulled": {"batch_02": {"applied": 10, "labels_added": 5}, "fixes": {"applied": 2, "labels_updated": 2}},
     "mislabel_decisions": {"accepted": 5, "rejected": 1, "reannotate": 1}},
]
SATURATION = {"batches": [{"name": "batch_01", "n_edge": 40, "covered_before": 0.1, "covered_after": 0.5, "gain": 0.4},
                          {"name": "batch_02", "n_edge": 40, "covered_before": 0.5, "covered_after": 0.51,
                           "gain": 0.01},
                          {"name": "batch_<3>", "n_edge": 40, "covered_before": 0.51, "covered_after": 0.52,
                           "gain": 0.01}]}


def test_label_changes_sum_batches_and_difference_running_decision_totals():
    rows = label_changes(HISTORY)
    assert [r["applied"] for r in rows] == [0, 9, 12]
    assert [r["labels_updated"] for r in rows] == [0, 3, 2]
    assert [(r["suspects_accepted"], r["suspects_rejected"], r["suspects_reannotate"]) for r in rows] == \
        [(0, 0, 0), (2, 1, 0), (3, 0, 1)]
    assert rows[1]["conflicts"] == 2 and rows[0]["suspects_found"] is None


def test_page_has_the_curve_the_verdict_totals_and_escapes_names():
    page = render_loop_report(HISTORY, SATURATION, dataset_name="digits & <co>")
    assert page.count("<circle") == 3 and "<polyline" in page
    assert "batch_&lt;3&gt;" in page and "digits &amp; &lt;co&gt;" in page and "<co>" not in page
    assert "Edge cases are saturated: the last 2 batch(es) each added under 2% of the edge region (+1.0%, +1.0%; " \
        "52.0% covered)" in page
    assert "<th>total</th><th>21</th><th>5</th><th>25</th><th>1</th><th>1</th><th>2</th>" in page
    assert "simulated" in page  # iteration 2 was answered by the simulated annotator, and the page says so
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing fetched


def test_page_without_batches_says_so():
    page = render_loop_report([], {"batches": [], "saturated": False}, dataset_name="d")
    assert "No batch selected yet" in page and "<svg" not in page
