"""The HTML reports: what each page holds, and, in headless Chromium, that every chart rendered and
that the page fetches nothing.

The evaluation result is made by the real metric functions (``compute_metrics``,
``compare_paired``) on seeded predictions, so the page is built from the very structures the
evaluate step produces, without training a model. The Chromium tests skip, with the reason, where
no Chromium is installed (.ci/run installs Debian's ``chromium``).
"""

from __future__ import annotations

import dataclasses
import http.server
import re
import threading

import numpy as np
import pytest

from components import report_html
from components.evaluate import compare_paired, compute_metrics
from headless_chromium import MISSING_REASON, chromium_binary, visit

CHARTS = ["learning-curves", "confusion-matrix", "reliability", "per-class", "champion"]


def _epochs(head: int, fine_tune: int) -> list[dict]:
    rows = [{"phase": "head", "epoch": i + 1, "lr": 1e-3, "loss": 1.6 / (i + 1), "accuracy": 0.5 + 0.05 * i,
             "val_loss": 1.7 / (i + 1), "val_accuracy": 0.45 + 0.05 * i} for i in range(head)]
    return rows + [{"phase": "fine_tune", "epoch": i + 1, "lr": 3e-4 * 0.9 ** i, "loss": 0.3 / (i + 1),
                    "accuracy": 0.8 + 0.03 * i, "val_loss": 0.4 / (i + 1), "val_accuracy": 0.78 + 0.03 * i}
                   for i in range(fine_tune)]


@pytest.fixture(scope="module")
def evaluation():
    """``(result, training)`` as the evaluate step sees them, champion compared."""
    rng = np.random.default_rng(0)
    classes = ["5", "6", "7", "8", "9"]
    truth_ids = np.arange(60) % 5
    logits = rng.normal(0.0, 1.0, (60, 5))
    logits[np.arange(60), truth_ids] += 2.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    metrics = compute_metrics([classes[i] for i in truth_ids], probabilities, classes)
    champion_right = rng.random(60) < 0.7
    paired = compare_paired(probabilities.argmax(axis=1) == truth_ids, champion_right)
    result = {
        "metrics": metrics, "class_names": classes, "blessed": True, "reason": "accuracy clears the floor",
        "champion": {"version": 3, "status": "compared", "accuracy": float(champion_right.mean()), "macro_f1": 0.68,
                     "paired_test": dataclasses.asdict(paired)},
        "diagnosis": {"verdict": "ok", "reason": "no gap", "remedies": [], "epochs": 9, "final": {}},
    }
    return result, {"epochs": _epochs(4, 5), "phase_seconds": {"head": 3.2, "fine_tune": 12.5}}


def test_the_evaluation_page_holds_every_chart_under_a_policy_that_forbids_fetching(evaluation):
    result, training = evaluation
    page = report_html.evaluation_report(result, training)
    assert re.findall(r'<svg data-chart="([a-z-]+)"', page) == CHARTS
    assert report_html.expected_charts(result, training) == len(CHARTS)
    assert f'content="{report_html.CONTENT_SECURITY_POLICY}"' in page
    assert "<script" not in page and "<img" not in page and "<link" not in page
    # Every id is unique across the inline charts: one chart cannot borrow another's clip path.
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert ids and len(ids) == len(set(ids))
    references = set(re.findall(r'(?:"#|url\(#)([^")]+)', page))
    assert references <= set(ids)
    assert "Champion version 3 on the same 60 test images" in page


@pytest.mark.parametrize("champion, training, charts", [
    (None, None, ["confusion-matrix", "reliability", "per-class"]),
    ({"version": 2, "status": "different_labels", "classes": ["a", "b"]}, {"epochs": _epochs(2, 0)},
     ["learning-curves", "confusion-matrix", "reliability", "per-class"]),
])
def test_charts_that_have_no_data_are_left_out_and_said_so(evaluation, champion, training, charts):
    result = {**evaluation[0], "champion": champion}
    page = report_html.evaluation_report(result, training)
    assert re.findall(r'<svg data-chart="([a-z-]+)"', page) == charts
    assert report_html.expected_charts(result, training) == len(charts)
    assert ("No champion" in page) == (champion is None) and ("not compared" in page) == (champion is not None)


def test_the_training_page_draws_both_phases_in_one_chart():
    summary = {
        "settings": {"base_model": "mobilenet_v2", "base_weights": "backbone.weights.h5"}, "labels": ["a", "b"],
        "train_examples": 100, "eval_examples": 20, "image_size": 48, "devices": {"replicas": 1}, "seconds": 12.3,
        "epochs": _epochs(3, 2), "phase_seconds": {"head": 1.0, "fine_tune": 2.0},
    }
    page = report_html.training_report(summary)
    assert re.findall(r'<svg data-chart="([a-z-]+)"', page) == ["learning-curves"]
    assert page.count("<td>head</td>") == 3 and page.count("<td>fine_tune</td>") == 2


@pytest.fixture(scope="module")
def chromium():
    binary = chromium_binary()
    if binary is None:
        pytest.skip(MISSING_REASON)
    return binary


def test_every_chart_renders_in_chromium_and_the_page_makes_no_request(evaluation, chromium, tmp_path):
    result, training = evaluation
    path = tmp_path / "report.html"
    report_html.write_page(report_html.evaluation_report(result, training), str(path))
    seen = visit(str(path), chromium)
    assert seen.requests == [seen.url], seen.requests
    assert (seen.failed, seen.issues, [entry for entry in seen.log if entry[0] == "error"]) == ([], [], [])
    assert [svg["chart"] for svg in seen.svgs] == CHARTS
    for svg in seen.svgs:
        # Laid out at a readable size, drawn with many shapes, and visibly painted.
        assert svg["width"] > 300 and svg["height"] > 200 and svg["shapes"] > 100 and svg["ink"] > 0.05, svg
    (tmp_path / "report.png").write_bytes(seen.screenshot)
    assert seen.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(seen.screenshot) > 50_000


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_check_sees_a_request_and_the_policy_blocks_it(chromium, tmp_path):
    """The negative control: a page that loads an image from a loopback server. Without the
    policy the server is hit and the visit records it; under the report's policy the visit
    records the blocked attempt and the server is never hit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    image = f'<img alt="" src="http://127.0.0.1:{server.server_port}/pixel.png">'
    try:
        plain = tmp_path / "plain.html"
        plain.write_text(f"<!DOCTYPE html><html><body>{image}</body></html>")
        seen = visit(str(plain), chromium)
        assert f"http://127.0.0.1:{server.server_port}/pixel.png" in seen.requests and _Counter.hits == ["/pixel.png"]

        guarded = tmp_path / "guarded.html"
        report_html.write_page(report_html.page("Guarded", [image]), str(guarded))
        seen = visit(str(guarded), chromium)
        assert seen.requests[1:] == [f"http://127.0.0.1:{server.server_port}/pixel.png"]
        assert [reason for _, _, reason in seen.failed] == ["csp"]
        assert [code for code, _ in seen.issues] == ["ContentSecurityPolicyIssue"]
        assert _Counter.hits == ["/pixel.png"]  # still only the unguarded page's request
    finally:
        server.shutdown()
        server.server_close()
