"""The charts (``components.charts``): SVG text that can sit inline next to other charts, drawn
from the steps' own structures, deterministic, and refusing input it cannot draw."""

from __future__ import annotations

import re

import pytest

from components import charts


def _rows(phases: list[str]) -> list[dict]:
    return [{"phase": p, "epoch": i + 1, "lr": 1e-3, "loss": 1.0 / (i + 1), "accuracy": 0.1 * i} for i, p in enumerate(phases)]


def test_an_inline_chart_is_plain_svg_with_its_ids_prefixed():
    svg = charts.confusion_heatmap([[3, 1], [0, 4]], ["cat", "dog"])
    assert svg.startswith('<svg data-chart="confusion-matrix" ') and "<?xml" not in svg and "<!DOCTYPE" not in svg
    ids = re.findall(r'\bid="([^"]+)"', svg)
    assert ids and all(i.startswith("confusion-matrix-") for i in ids)
    # pcolormesh and a vector colour bar: no raster image inside.
    assert "<image" not in svg


def test_a_chart_is_the_same_text_for_the_same_numbers():
    bins = [{"lower": 0.6, "upper": 2 / 3, "count": 5, "accuracy": 0.6, "confidence": 0.63},
            {"lower": 14 / 15, "upper": 1.0, "count": 20, "accuracy": 0.95, "confidence": 0.97}]
    assert charts.reliability_diagram(bins, 0.03) == charts.reliability_diagram(bins, 0.03)


def test_the_phase_boundary_is_drawn_only_when_there_are_two_phases():
    both = charts.learning_curves(_rows(["head"] * 3 + ["fine_tune"] * 2))
    head_only = charts.learning_curves(_rows(["head"] * 3))
    # The dashed boundary is one line per panel (loss, accuracy, learning rate), labelled on
    # both sides; matplotlib writes each text's string as a comment beside its glyph paths.
    assert both.count("stroke-dasharray") - head_only.count("stroke-dasharray") == 3
    texts = re.findall(r"<!-- (.*?) -->", both)
    assert "head " in texts and " fine-tune" in texts and "Learning curves (5 epochs: head 3, fine-tune 2)" in texts
    assert " fine-tune" not in re.findall(r"<!-- (.*?) -->", head_only)


@pytest.mark.parametrize("draw, message", [
    (lambda: charts.learning_curves([]), "no epoch rows"),
    (lambda: charts.learning_curves([{"phase": "head", "loss": 1.0}]), r"epoch row 0 has no \['accuracy'\]"),
    (lambda: charts.confusion_heatmap([[1, 2]], ["a", "b"]), r"shape \(1, 2\) does not match 2 class names"),
    (lambda: charts.reliability_diagram([], 0.0), "no calibration bin"),
    (lambda: charts.champion_comparison({"accuracy": 1, "macro_f1": 1}, {"status": "different_labels"}),
     "status 'different_labels'"),
    (lambda: charts.to_svg(None, "Bad Name"), "must match"),
])
def test_input_that_cannot_be_drawn_is_refused_by_name(draw, message):
    with pytest.raises(ValueError, match=message):
        draw()
