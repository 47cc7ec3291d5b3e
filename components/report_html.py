"""The HTML reports that the KFP UI shows on a run's page (``dsl.HTML`` artifacts).

``evaluation_report`` (the evaluate step) and ``training_report`` (the finetune step) each return
one self-contained page: the charts of ``components.charts`` inline as SVG, the numbers in
tables, inline CSS, no script and no external resource. The page's Content-Security-Policy
(``CONTENT_SECURITY_POLICY``) forbids every fetch except inline styles and ``data:`` images, so
it opens from disk, in an air-gapped network and in the KFP UI's sandboxed frame alike, and a
browser would refuse (not silently perform) any request a future edit added.
"""

from __future__ import annotations

import html
import os
from typing import Any, Mapping, Sequence

from components import charts

#: No fetch of any kind: only the page's own inline styles and data: images (none today).
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto; max-width: 60em;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure.chart { margin: 1em 0; }
figure.chart svg { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; }
.verdict { font-weight: bold; }
"""


def page(title: str, sections: Sequence[str]) -> str:
    """A complete HTML page: ``title`` as ``<title>`` and ``<h1>``, then ``sections`` (HTML
    fragments, in order), under ``CONTENT_SECURITY_POLICY``."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CONTENT_SECURITY_POLICY}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )


def figure(svg: str, caption: str) -> str:
    """One chart (``components.charts``' SVG) with a caption (plain text, escaped)."""
    return f'<figure class="chart">\n{svg}\n<figcaption>{html.escape(caption)}</figcaption>\n</figure>'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; cells are shown with ``str`` and escaped (format numbers beforehand)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _paragraph(text: str, css_class: str = "") -> str:
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<p{attribute}>{html.escape(text)}</p>"


def _learning_curves_section(training: Mapping[str, Any] | None) -> list[str]:
    if not training or not training.get("epochs"):
        return ["<h2>Learning curves</h2>", _paragraph("Not available: the model artifact has no training.json epochs.")]
    phases = ", ".join(f"{name.replace('_', '-')} {seconds:.1f} s" for name, seconds in (training.get("phase_seconds") or {}).items())
    return ["<h2>Learning curves</h2>", figure(
        charts.learning_curves(training["epochs"]),
        "Train and eval loss and accuracy, and the learning rate, per epoch; the dashed line separates the head phase "
        "(base frozen) from the fine-tune phase" + (f" ({phases})." if phases else "."),
    )]


def evaluation_report(result: Mapping[str, Any], training: Mapping[str, Any] | None = None) -> str:
    """The evaluate step's page.

    Args:
        result: ``components.evaluate.run_evaluate``'s result (``metrics``, ``class_names``,
            ``blessed``, ``reason``, ``champion``, ``diagnosis``).
        training: The model's ``training.json`` (``run_finetune_step``'s summary), or None.

    Returns:
        The page: the blessing and its reason, the scalar metrics, then the charts in this
        order: learning curves (when ``training`` has epochs), confusion matrix, reliability
        diagram, per-class precision/recall/F1, and the champion comparison (when a champion
        was compared); ``expected_charts(result, training)`` of them.
    """
    m = result["metrics"]
    scalars = [(name.replace("_", " "), f"{value:.4f}" if isinstance(value, float) else value)
               for name, value in m.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
    sections = [
        _paragraph(f"{'Blessed' if result['blessed'] else 'Not blessed'}: {result['reason']}", "verdict"),
        table(("metric", "value"), scalars),
    ]
    sections += _learning_curves_section(training)
    diagnosis = result.get("diagnosis")
    if diagnosis:
        sections.append(_paragraph(f"Diagnosis: {diagnosis['verdict']}: {diagnosis['reason']}."))
        if diagnosis["remedies"]:
            sections.append("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in diagnosis["remedies"]) + "</ul>")
    sections += [
        "<h2>Confusion matrix</h2>",
        figure(charts.confusion_heatmap(m["confusion_matrix"], result["class_names"]),
               "Rows: true class; columns: predicted class; colour: share of the row (the class's recall on the diagonal)."),
        "<h2>Calibration</h2>",
        figure(charts.reliability_diagram(m["calibration_bins"], m["expected_calibration_error"]),
               "Accuracy of the predictions in each confidence bin; bars below the diagonal are over-confident."),
        "<h2>Per class</h2>",
        figure(charts.per_class_bars(m["per_class"]), "Precision, recall and F1 per class (test images in brackets)."),
        table(("class", "precision", "recall", "F1", "support"),
              [(c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", v["support"]) for c, v in m["per_class"].items()]),
        "<h2>Champion</h2>",
    ]
    champion = result.get("champion")
    if not champion:
        sections.append(_paragraph("No champion: the target environment has no model yet, so the floor alone decided."))
    elif champion["status"] != "compared":
        sections.append(_paragraph(f"Champion version {champion['version']} was trained on other classes "
                                   f"({', '.join(champion['classes'])}); not compared."))
    else:
        test = champion["paired_test"]
        sections.append(figure(
            charts.champion_comparison(m, champion),
            f"Champion version {champion['version']} on the same {test['n']} test images: b={test['b']} only the "
            f"challenger right, c={test['c']} only the champion right ({test['method']}). The p-value is reported, "
            "not gating.",
        ))
    return page("Evaluation", sections)


def expected_charts(result: Mapping[str, Any], training: Mapping[str, Any] | None = None) -> int:
    """How many charts ``evaluation_report(result, training)`` draws: 3 always (confusion matrix,
    reliability, per class), +1 with training epochs, +1 with a compared champion."""
    champion = result.get("champion") or {}
    return 3 + bool(training and training.get("epochs")) + (champion.get("status") == "compared")


def training_report(summary: Mapping[str, Any]) -> str:
    """The finetune step's page: the run's settings in one line, the learning curves of both
    phases (one chart; none without epochs) and the per-epoch table.

    Args:
        summary: ``run_finetune_step``'s summary (what ``training.json`` holds).
    """
    settings = summary["settings"]
    head = (
        f"Base model {settings['base_model']} ({settings['base_weights']}), {len(summary['labels'])} classes, "
        f"{summary['train_examples']} train / {summary['eval_examples']} eval images, image size {summary['image_size']} px; "
        f"{summary['devices']['replicas']} replica(s); {summary['seconds']:.1f} s in all."
    )
    rows = [
        (r["phase"], r["epoch"], *(f"{r.get(k, float('nan')):.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")),
         f"{r.get('lr', float('nan')):.3g}")
        for r in summary["epochs"]
    ]
    sections = [_paragraph(head)] + _learning_curves_section(summary)
    sections += ["<h2>Epochs</h2>", table(("phase", "epoch", "loss", "accuracy", "eval loss", "eval accuracy", "learning rate"), rows)]
    return page("Training", sections)


def write_page(text: str, path: str) -> None:
    """Writes a page atomically (temp file, then rename), creating the parent folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
