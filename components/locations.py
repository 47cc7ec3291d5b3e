"""Where a command may write: never inside the model registry or the input data.

Only the registry's own operations write inside a registry: a TF Serving export, a pipeline
root, a run summary or a checkpoint folder placed there can replace, remove or shadow versions
(``export-serving --base-path <registry>/<model>`` once removed version folders it took for its
own). Writing into the input data changes what the next run trains on. So every output location
a command takes is checked against both before anything runs.

Locations are compared as written, after ``file://`` is stripped: local paths by their resolved
absolute path (symbolic links followed), ``gs://`` URIs by bucket and whole path segments. A
local path and a ``gs://`` URI never contain one another.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from components.storage import is_gcs, split_gcs_uri, strip_file_scheme


def _segments(location: str) -> tuple[str, ...]:
    """A location as comparable segments: ``("gs:", bucket, *parts)`` or the resolved path's parts."""
    if is_gcs(location):
        bucket, path = split_gcs_uri(location)
        return ("gs:", bucket, *[p for p in path.split("/") if p])
    resolved = os.path.realpath(os.path.abspath(strip_file_scheme(location)))
    return tuple(p for p in resolved.split(os.sep) if p)


def is_inside(location: str, folder: str) -> bool:
    """Whether ``location`` is ``folder`` itself or lies under it (see the module docstring).

    Args:
        location: A local path, ``file://`` URI or ``gs://bucket/path``.
        folder: Likewise.

    Raises:
        ValueError: A ``gs://`` URI without a bucket.
    """
    inner, outer = _segments(location), _segments(folder)
    return inner[: len(outer)] == outer


def refuse_inside(outputs: Mapping[str, str], protected: Mapping[str, str]) -> None:
    """Refuses any output location that lies inside a protected one.

    Args:
        outputs: What the command writes: a name for messages (e.g. ``"--summary"``) -> its
            location; empty locations are skipped.
        protected: What it must not write into: a name (e.g. ``"registry_uri"``) -> its
            location; empty locations are skipped.

    Raises:
        ValueError: ``"--summary /r/x.json lies inside the registry_uri /r: only the registry's
            own operations write there; choose a location outside it"`` for the first output
            found inside a protected location.
    """
    for out_name, out in outputs.items():
        for name, folder in protected.items():
            if out and folder and is_inside(out, folder):
                raise ValueError(
                    f"{out_name} {out!r} lies inside the {name} {folder!r}: "
                    + ("only the registry's own operations write there" if "registry" in name
                       else "a run must not change its own input data")
                    + "; choose a location outside it"
                )


def check_run_outputs(
    params: Mapping[str, Any], outputs: Mapping[str, str] | None = None, resolve: Callable[[str], str] = str
) -> None:
    """Refuses a run whose outputs lie inside its ``registry_uri`` or ``data_uri``, and a
    ``registry_uri`` and ``data_uri`` that are one folder or lie one inside the other.

    Args:
        params: Pipeline parameters; ``checkpoint_dir`` is an output, ``registry_uri`` and
            ``data_uri`` are protected.
        outputs: The command's own outputs (e.g. ``{"--pipeline-root": ..., "--summary": ...}``).
        resolve: Maps a non-empty local parameter value to where it lies for this command (e.g.
            a container path to its host path); ``gs://`` values are not passed to it.

    Raises:
        ValueError: See :func:`refuse_inside`.
    """

    def value(name: str) -> str:
        found = str(params.get(name) or "")
        return resolve(found) if found and "://" not in found else found

    registry, data = value("registry_uri"), value("data_uri")
    # The registry is the run's own output: pushed versions inside the data become input files
    # of the next run (unusable ones: "11 of 907 input files are unusable"), and a registry
    # folder at the top of the data reads as a class.
    if registry and data and _segments(registry) == _segments(data):
        raise ValueError(f"registry_uri {registry!r} and data_uri {data!r} are the same folder: a push would write "
                         "into the folder the run reads its images from; keep the data and the registry apart")
    refuse_inside({"registry_uri": registry}, {"data_uri": data})
    if registry and data and is_inside(data, registry):
        raise ValueError(
            f"data_uri {data!r} lies inside the registry_uri {registry!r}: a push would write into "
            "the folder the run reads its images from; keep the data and the registry apart"
        )
    refuse_inside(
        {**(outputs or {}), "checkpoint_dir": value("checkpoint_dir")},
        {"registry_uri": registry, "data_uri": data},
    )
