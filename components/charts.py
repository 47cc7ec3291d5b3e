"""The charts of the HTML reports, drawn with matplotlib and returned as SVG text.

Each function takes the numbers a step already computed (``training.json``'s epoch rows,
``components.evaluate.compute_metrics``' result, the champion comparison) and returns one
self-contained ``<svg>`` element, ready to be placed inline in an HTML page
(``components.report_html``):

* glyphs are drawn as paths (``svg.fonttype = "path"``, matplotlib's default), so the page needs
  no font file; the text stays readable as ``<title>``-less paths, and the numbers are also in
  the report's tables;
* no pyplot: figures are ``matplotlib.figure.Figure`` objects rendered by the SVG backend, so no
  GUI backend is chosen and no global figure state is kept (Agg is the backend pyplot would pick
  on a headless machine; it is never needed here);
* every ``id`` in a chart is prefixed with the chart's name, so that several charts inline in one
  page cannot resolve each other's clip paths or glyph definitions;
* the output is deterministic: a fixed ``svg.hashsalt`` and no ``Date`` metadata.
"""

from __future__ import annotations

import functools
import io
import re
from typing import Any, Callable, Mapping, Sequence

# Colours from matplotlib's default cycle (tab10), named for what they show.
TRAIN_COLOUR = "#1f77b4"
EVAL_COLOUR = "#ff7f0e"
CHAMPION_COLOUR = "#7f7f7f"
F1_COLOUR = "#2ca02c"

_RC = {
    "svg.fonttype": "path",
    "svg.hashsalt": "kfp-finetune",
    "font.size": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
_XML_HEADER = re.compile(r"\A\s*<\?xml[^>]*\?>\s*(<!DOCTYPE[^>]*>\s*)?", re.S)
_ID = re.compile(r'\bid="([^"]+)"')
# An id's definition and the two ways an SVG refers to one.
_ID_OR_REFERENCE = re.compile(r'(\bid="|"#|url\(#)([^")]+)')


def _styled(chart: Callable[..., str]) -> Callable[..., str]:
    """Draws ``chart`` under the module's matplotlib settings (font size, grid, SVG output);
    matplotlib reads them when artists are created as well as when the SVG is written."""

    @functools.wraps(chart)
    def draw(*args: Any, **kwargs: Any) -> str:
        import matplotlib

        with matplotlib.rc_context(_RC):
            return chart(*args, **kwargs)

    return draw


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def to_svg(figure: Any, name: str) -> str:
    """Renders ``figure`` as an inline ``<svg>`` element whose ids are prefixed with ``name``.

    Args:
        figure: A ``matplotlib.figure.Figure``.
        name: The chart's name, ``[a-z0-9_-]+``; it prefixes every ``id`` and the references to
            them (``#id``, ``url(#id)``), and is set as the root's ``data-chart`` attribute.

    Returns:
        The SVG text without the XML declaration and DOCTYPE (not allowed inside HTML).

    Raises:
        ValueError: ``name`` has characters outside ``[a-z0-9_-]``.
    """
    import matplotlib

    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"chart name {name!r} must match [a-z0-9_-]+")
    buffer = io.StringIO()
    with matplotlib.rc_context(_RC):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = _XML_HEADER.sub("", buffer.getvalue())
    ids = set(_ID.findall(svg))
    svg = _ID_OR_REFERENCE.sub(lambda m: f"{m[1]}{name}-{m[2]}" if m[2] in ids else m[0], svg)
    return svg.replace("<svg ", f'<svg data-chart="{name}" ', 1)


@_styled
def learning_curves(epochs: Sequence[Mapping[str, Any]]) -> str:
    """Loss, accuracy and learning rate per epoch over both phases, the phase boundary marked.

    Args:
        epochs: ``training.json``'s ``epochs`` rows in training order: ``phase`` (``head`` or
            ``fine_tune``), ``epoch`` (1-based within the phase), ``lr``, ``loss`` and
            ``accuracy``, optionally ``val_loss`` and ``val_accuracy`` (the eval split).

    Returns:
        One SVG with three panels sharing the x axis (epochs counted across both phases);
        a dashed vertical line sits between the last head epoch and the first fine-tune epoch.

    Raises:
        ValueError: no rows, or a row without ``phase``, ``loss`` or ``accuracy``.
    """
    if not epochs:
        raise ValueError("no epoch rows: nothing to plot (training.json's 'epochs' is empty)")
    for i, row in enumerate(epochs):
        missing = [k for k in ("phase", "loss", "accuracy") if k not in row]
        if missing:
            raise ValueError(f"epoch row {i} has no {missing} (keys: {sorted(row)})")
    x = list(range(1, len(epochs) + 1))
    figure = _figure(7.2, 5.4)
    loss_ax, acc_ax, lr_ax = figure.subplots(3, 1, sharex=True, height_ratios=(3, 3, 1.6))
    for ax, key, label in ((loss_ax, "loss", "loss (nats)"), (acc_ax, "accuracy", "accuracy")):
        ax.plot(x, [r[key] for r in epochs], marker=".", color=TRAIN_COLOUR, label="train")
        if any(f"val_{key}" in r for r in epochs):
            ax.plot(x, [r.get(f"val_{key}", float("nan")) for r in epochs], marker=".", color=EVAL_COLOUR, label="eval")
        ax.set_ylabel(label)
    acc_ax.set_ylim(-0.02, 1.02)
    from matplotlib.ticker import MaxNLocator

    rates = [r.get("lr", float("nan")) for r in epochs]
    lr_ax.plot(x, rates, marker=".", color=CHAMPION_COLOUR)
    # The fine-tune phase's rate is usually 10-100x lower (Keras' transfer-learning guide).
    if all(rate > 0 for rate in rates):
        lr_ax.set_yscale("log")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("epoch (both phases)")
    lr_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    phases = [str(r["phase"]).replace("_", "-") for r in epochs]
    boundary = next((i for i in range(1, len(phases)) if phases[i] != phases[i - 1]), None)
    for ax in (loss_ax, acc_ax, lr_ax):
        if boundary is not None:
            ax.axvline(boundary + 0.5, color="black", linestyle="--", linewidth=1)
    if boundary is not None:
        for text, align in ((f"{phases[0]} ", "right"), (f" {phases[boundary]}", "left")):
            loss_ax.annotate(text, xy=(boundary + 0.5, 0.97), xycoords=("data", "axes fraction"), ha=align, va="top",
                             fontsize=8, fontstyle="italic")
    loss_ax.legend(loc="best")
    loss_ax.set_title(f"Learning curves ({len(epochs)} epochs: " + ", ".join(
        f"{phase} {phases.count(phase)}" for phase in dict.fromkeys(phases)) + ")")
    return to_svg(figure, "learning-curves")


@_styled
def confusion_heatmap(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> str:
    """The confusion matrix as a heat map: counts written in the cells, colour = share of the row.

    Colouring by row share (the recall of a true class) keeps a small class's mistakes as
    visible as a large class's; the counts stay readable in the cells.

    Args:
        matrix: ``[k, k]`` counts, rows = true class, columns = predicted class.
        class_names: The ``k`` names in matrix order.

    Returns:
        One SVG.

    Raises:
        ValueError: the matrix is not ``[k, k]`` with ``k = len(class_names)`` >= 1.
    """
    import numpy as np

    counts = np.asarray(matrix, dtype=np.int64)
    k = len(class_names)
    if k < 1 or counts.shape != (k, k):
        raise ValueError(f"confusion matrix shape {counts.shape} does not match {k} class names")
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, float), where=rows > 0)
    side = min(8.0, 2.2 + 0.45 * k)
    figure = _figure(side + 1.2, side)
    ax = figure.subplots()
    # pcolormesh, not imshow: imshow is written into the SVG as an embedded PNG; these cells
    # stay vector shapes.
    mesh = ax.pcolormesh(share, cmap="Blues", vmin=0.0, vmax=1.0, edgecolors="white", linewidth=0.5)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.grid(False)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(j + 0.5, i + 0.5, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    centres = [i + 0.5 for i in range(k)]
    ax.set_xticks(centres, labels=list(class_names), rotation=45 if k > 8 else 0, ha="right" if k > 8 else "center")
    ax.set_yticks(centres, labels=list(class_names))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix ({int(counts.sum())} test images)")
    colorbar = figure.colorbar(mesh, ax=ax, label="share of the true class", shrink=0.8)
    # A colour bar of many steps is rasterized by default (an embedded PNG); keep it vector.
    colorbar.solids.set_rasterized(False)
    colorbar.solids.set_edgecolor("face")  # no hairline seams between the steps
    return to_svg(figure, "confusion-matrix")


@_styled
def reliability_diagram(bins: Sequence[Mapping[str, Any]], ece: float) -> str:
    """Accuracy against confidence per confidence bin (Guo et al. 2017, fig. 1), with the counts.

    Args:
        bins: ``components.evaluate.calibration_bins``' non-empty bins: ``lower``, ``upper``,
            ``count``, ``accuracy``, ``confidence`` (all but ``count`` in [0, 1]).
        ece: The expected calibration error, in [0, 1], for the title.

    Returns:
        One SVG: bars of the accuracy over each bin's span, the bin's mean confidence as a
        marker, the diagonal of perfect calibration, and below it the examples per bin.

    Raises:
        ValueError: no bin.
    """
    if not bins:
        raise ValueError("no calibration bin: nothing to plot")
    figure = _figure(6.4, 5.6)
    ax, count_ax = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    lows, widths = [b["lower"] for b in bins], [b["upper"] - b["lower"] for b in bins]
    ax.bar(lows, [b["accuracy"] for b in bins], width=widths, align="edge", color=TRAIN_COLOUR, alpha=0.8,
           edgecolor="white", label="accuracy")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color=EVAL_COLOUR, markersize=4,
            label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="black", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (expected calibration error {ece:.4f})")
    figure.legend(loc="outside lower center", ncols=3)
    count_ax.bar(lows, [b["count"] for b in bins], width=widths, align="edge", color=CHAMPION_COLOUR, edgecolor="white")
    count_ax.set_ylabel("examples")
    count_ax.set_xlabel("confidence of the predicted class")
    return to_svg(figure, "reliability")


@_styled
def per_class_bars(per_class: Mapping[str, Mapping[str, float]]) -> str:
    """Precision, recall and F1 of each class as grouped horizontal bars.

    Args:
        per_class: ``{class: {"precision", "recall", "f1", "support"}}`` (values in [0, 1]), in
            the order to show, as ``compute_metrics`` returns it.

    Returns:
        One SVG, one group of three bars per class (top to bottom in the given order).

    Raises:
        ValueError: no class.
    """
    if not per_class:
        raise ValueError("no class: nothing to plot")
    names = list(per_class)
    k = len(names)
    figure = _figure(6.4, min(12.0, 1.4 + 0.55 * k))
    ax = figure.subplots()
    height = 0.27
    for offset, (key, colour) in enumerate((("precision", TRAIN_COLOUR), ("recall", EVAL_COLOUR), ("f1", F1_COLOUR))):
        ys = [i + (offset - 1) * height for i in range(k)]
        ax.barh(ys, [per_class[n][key] for n in names], height=height, color=colour, label=key if key != "f1" else "F1")
    ax.set_yticks(range(k), labels=[f"{n} ({per_class[n].get('support', '?')})" for n in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score")
    ax.set_ylabel("class (test images)")
    ax.set_title("Per-class precision, recall and F1")
    figure.legend(loc="outside lower center", ncols=3)
    return to_svg(figure, "per-class")


@_styled
def champion_comparison(challenger: Mapping[str, float], champion: Mapping[str, Any]) -> str:
    """The challenger against the champion: accuracy and macro F1 side by side, and the paired
    accuracy difference with its bootstrap interval.

    Args:
        challenger: ``accuracy`` and ``macro_f1`` of the challenger, in [0, 1].
        champion: ``run_evaluate``'s ``champion`` block with ``status`` ``compared``:
            ``version``, ``accuracy``, ``macro_f1`` and ``paired_test`` (the fields of
            ``components.evaluate.PairedTest``).

    Returns:
        One SVG with two panels.

    Raises:
        ValueError: the champion was not compared (no ``paired_test``).
    """
    if champion.get("status") != "compared" or "paired_test" not in champion:
        raise ValueError(f"champion block has status {champion.get('status')!r}; only a compared champion can be charted")
    test = champion["paired_test"]
    figure = _figure(7.2, 3.0)
    bars_ax, diff_ax = figure.subplots(1, 2, width_ratios=(3, 2))
    keys = ("accuracy", "macro_f1")
    xs = range(len(keys))
    bars_ax.bar([x - 0.2 for x in xs], [challenger[k] for k in keys], width=0.4, color=TRAIN_COLOUR, label="challenger")
    bars_ax.bar([x + 0.2 for x in xs], [champion[k] for k in keys], width=0.4, color=CHAMPION_COLOUR,
                label=f"champion v{champion['version']}")
    bars_ax.set_xticks(list(xs), labels=["accuracy", "macro F1"])
    bars_ax.set_ylim(0, 1.2)
    bars_ax.legend(loc="upper center", ncols=2)
    bars_ax.set_title("Same test images")
    diff = test["difference"]
    diff_ax.errorbar([0], [diff], yerr=[[diff - test["ci_low"]], [test["ci_high"] - diff]], fmt="o", color=TRAIN_COLOUR,
                     capsize=6)
    diff_ax.axhline(0.0, color="black", linewidth=1)
    diff_ax.set_xticks([0], labels=["accuracy"])
    diff_ax.set_xlim(-1, 1)
    diff_ax.set_ylabel("challenger - champion")
    diff_ax.set_title(f"{test['confidence']:.0%} paired bootstrap CI\nMcNemar p={test['p_value']:.2g}")
    return to_svg(figure, "champion")
