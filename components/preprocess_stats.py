"""Preprocess statistics: what ``statistics.json`` holds, the bad-input policy, the Markdown report.

Pure functions of the manifest rows (one dict per input file, see ``components.preprocess``):
no Beam, no TensorFlow, so they are tested against tables of rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable

from components.artifacts import SPLITS, few_images_warnings

# Size histogram buckets: the longer side of the image, in pixels.
_SIZE_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096)


class DataError(ValueError):
    """The input data cannot make a training set; the message names the class, file or count."""



def _size_order(bucket: str) -> int:
    """Sort key of a ``_size_bucket`` name: its bound (the open-ended bucket last)."""
    return int(bucket[2:]) if bucket.startswith("<=") else _SIZE_BUCKETS[-1] + 1


def _size_bucket(width: int, height: int) -> str:
    side = max(width, height)
    for bound in _SIZE_BUCKETS:
        if side <= bound:
            return f"<={bound}"
    return f">{_SIZE_BUCKETS[-1]}"


def summarize(rows: Iterable[dict[str, Any]], skipped: list[dict[str, str]], declared_classes: Iterable[str] = ()) -> dict[str, Any]:
    """Statistics of one preprocess run (what ``statistics.json`` holds), in one streaming pass.

    Args:
        rows: Manifest rows (see the module docstring).
        skipped: ``{"uri", "reason"}`` found before reading (``sources.Inventory.skipped``).
        declared_classes: Every class the input names, usable images or not.

    Returns:
        ``num_files`` (every input entry), ``num_images`` (usable), ``classes`` (sorted names with
        usable images), ``declared_classes``, ``class_counts`` {split: {class: n}},
        ``class_totals`` {class: n}, ``image_sizes`` {"<=N px": n} (longer side),
        ``image_modes``, ``image_formats``, ``converted`` (re-encoded as PNG), ``skipped``
        [{"uri", "reason"}], ``conflicts`` (images excluded for disagreeing labels),
        ``duplicates`` (usable images whose content equals another's), ``bad_fraction``,
        ``warnings`` (``artifacts.few_images_warnings``: classes with few eval or test images), and
        ``fingerprint``: SHA-256 over the sorted ``class<TAB>content SHA-256`` lines of the usable
        images (same images with the same labels -> same fingerprint, wherever they are stored).
    """
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    hist: dict[str, dict[str, int]] = {"image_sizes": {}, "image_modes": {}, "image_formats": {}}
    skipped = list(skipped)
    pairs: list[str] = []
    duplicates = conflicts = converted = 0
    num_files = len(skipped)
    for r in rows:
        num_files += 1
        if r["status"] != "ok":
            skipped.append({"uri": r["uri"], "reason": r["reason"]})
            conflicts += r["status"] == "conflict"
            continue
        counts[r["split"]][r["label"]] = counts[r["split"]].get(r["label"], 0) + 1
        for key, value in (("image_sizes", _size_bucket(r["width"], r["height"])), ("image_modes", r["mode"]), ("image_formats", r["format"])):
            hist[key][value] = hist[key].get(value, 0) + 1
        duplicates += bool(r.get("duplicate"))
        converted += bool(r.get("convert"))
        pairs.append(f"{r['label']}\t{r['sha256']}")
    totals: dict[str, int] = {}
    for split in counts.values():
        for c, n in split.items():
            totals[c] = totals.get(c, 0) + n
    classes = sorted(totals)
    return {
        "num_files": num_files,
        "num_images": len(pairs),
        "classes": classes,
        "declared_classes": sorted(set(declared_classes) | set(classes)),
        "class_counts": {s: dict(sorted(c.items())) for s, c in counts.items()},
        "class_totals": dict(sorted(totals.items())),
        # Sizes smallest first; modes and formats most frequent first.
        "image_sizes": dict(sorted(hist["image_sizes"].items(), key=lambda kv: _size_order(kv[0]))),
        **{k: dict(sorted(v.items(), key=lambda kv: -kv[1])) for k, v in hist.items() if k != "image_sizes"},
        "converted": converted,
        "skipped": sorted(skipped, key=lambda s: s["uri"]),
        "conflicts": conflicts,
        "duplicates": duplicates,
        "bad_fraction": (len(skipped) / num_files) if num_files else 0.0,
        "warnings": few_images_warnings(counts, classes),
        "fingerprint": hashlib.sha256("\n".join(sorted(pairs)).encode()).hexdigest(),
    }


def check_statistics(stats: dict[str, Any], max_bad_fraction: float = 0.01, min_images_per_class: int = 1) -> None:
    """Applies the bad-input policy (see the module docstring).

    Raises:
        DataError: too many unusable files (names the first ones, grouped by reason), fewer
            than two classes, a class with no usable image or below ``min_images_per_class``, or
            a class with no image in the train split; the message names classes and counts.
    """
    skipped = stats["skipped"]
    if stats["num_files"] and stats["bad_fraction"] > max_bad_fraction:
        shown = "; ".join(f"{s['uri']} ({s['reason']})" for s in skipped[:5])
        raise DataError(
            f"{len(skipped)} of {stats['num_files']} input files ({stats['bad_fraction']:.1%}) are unusable, more than "
            f"max_bad_fraction {max_bad_fraction:.1%}: {shown}" + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        )
    totals = stats["class_totals"]
    empty = [c for c in stats["declared_classes"] if totals.get(c, 0) == 0]
    if empty:
        raise DataError("class(es) with no usable image: " + ", ".join(repr(c) for c in empty))
    if len(stats["classes"]) < 2:
        raise DataError(
            f"found {len(stats['classes'])} class(es) with usable images ({', '.join(stats['classes']) or 'none'}); "
            "need at least two classes"
        )
    small = {c: n for c, n in totals.items() if n < min_images_per_class}
    if small:
        raise DataError(
            f"class(es) below min_images_per_class {min_images_per_class}: "
            + ", ".join(f"{c!r} has {n}" for c, n in small.items())
        )
    train = stats["class_counts"]["train"]
    no_train = [c for c in stats["classes"] if train.get(c, 0) == 0]
    if no_train:
        raise DataError(
            "class(es) with no image in the train split: "
            + ", ".join(f"{c!r} ({totals[c]} usable image(s) in all)" for c in no_train)
        )


def compare_labels(classes: list[str], champion_labels: list[str]) -> dict[str, Any]:
    """How this dataset's classes differ from the champion's.

    Returns:
        ``{"same": bool, "added": [...], "removed": [...]}`` (sorted names).
    """
    added, removed = sorted(set(classes) - set(champion_labels)), sorted(set(champion_labels) - set(classes))
    return {"same": not added and not removed, "added": added, "removed": removed}


def statistics_markdown(stats: dict[str, Any]) -> str:
    """A Markdown report of ``stats`` for the KFP UI."""
    lines = [
        "# Preprocessing statistics",
        "",
        f"{stats['num_images']} usable images of {stats['num_files']} input files in {len(stats['classes'])} classes; "
        f"{len(stats['skipped'])} skipped ({stats['bad_fraction']:.1%}); {stats['duplicates']} exact duplicate{'' if stats['duplicates'] == 1 else 's'} "
        f"(kept in one split); {stats['conflicts']} with conflicting labels (excluded); {stats['converted']} re-encoded as PNG.",
        "",
        "| class | " + " | ".join(SPLITS) + " | total |",
        "|---|" + "---:|" * (len(SPLITS) + 1),
    ]
    for c in stats["classes"]:
        row = [str(stats["class_counts"][s].get(c, 0)) for s in SPLITS]
        lines.append(f"| {c} | " + " | ".join(row) + f" | {stats['class_totals'][c]} |")
    for key, title in (("image_sizes", "Image size (longer side, px)"), ("image_modes", "Pixel mode"), ("image_formats", "Format")):
        lines += ["", f"**{title}**: " + ", ".join(f"{k}: {v}" for k, v in stats[key].items())]
    if stats.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in stats["warnings"]]
    champion = stats.get("champion")
    if champion:
        if champion["labels"]["same"]:
            lines += ["", f"Same label set as the champion (version {champion['version']} of {champion['alias']!r})."]
        else:
            lines += [
                "",
                f"**The label set differs from the champion's** (version {champion['version']} of {champion['alias']!r}): "
                f"added {champion['labels']['added']}, removed {champion['labels']['removed']}. "
                "The two models solve different tasks and are not compared.",
            ]
    if stats["skipped"]:
        lines += ["", "## Skipped files", "", "| file | reason |", "|---|---|"]
        lines += [f"| {s['uri']} | {s['reason']} |" for s in stats["skipped"][:200]]
        if len(stats["skipped"]) > 200:
            lines.append(f"| ... | {len(stats['skipped']) - 200} more in statistics.json |")
    lines += ["", f"Dataset fingerprint: `{stats['fingerprint']}`", ""]
    return "\n".join(lines)


def write_statistics(stats: dict[str, Any], json_path: str, markdown_path: str | None = None) -> None:
    """Writes ``statistics.json`` (and the Markdown report), each whole or not at all.

    A local path is written to a temporary file, then renamed; a URI (``gs://...``) through
    Beam's file systems (an object appears only when its upload completes).
    """
    for path, text in ((json_path, json.dumps(stats, indent=2)), (markdown_path, statistics_markdown(stats) if markdown_path else None)):
        if path is None:
            continue
        if "://" in path:
            from apache_beam.io.filesystems import FileSystems

            with FileSystems.create(path, mime_type="text/plain") as f:
                f.write(text.encode())
            continue
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
