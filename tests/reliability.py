"""The reliability catalogue's harness: a small world to run bad inputs against, and the checks
every case makes.

Import the fixtures into a test module (``from reliability import world, guard``); this is not a
conftest so that the suite's own ``conftest.py`` stays small. A case asserts three things:

* the exit code;
* the last ``stderr`` line is one ``error: ...`` line holding every expected fragment (the
  culprit, and what was expected);
* nothing changed on disk: not the data, not the registry (versions, aliases, the audit log),
  and no pipeline root, summary or artifact appeared (``snapshot`` before and after).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from collections.abc import Iterator
from typing import Any

import pytest

METADATA = {"metrics": {"accuracy": 0.9}, "blessing": {"blessed": True, "reason": "accuracy 0.9 >= floor 0.5"}}


@dataclasses.dataclass(frozen=True)
class World:
    """Everything a valid run needs, in one folder.

    Attributes:
        root: The folder holding all of it; ``snapshot(root)`` covers every file a case may touch.
        data: Class folders ``a/`` and ``b/`` of six 8x8 PNG images each.
        registry: A folder registry with version 1 of ``digits``, alias ``dev`` on it (an audit entry).
        weights: A MobileNetV2 (width 0.35, 32 px) ``.weights.h5`` file that fits.
        pipeline_root, summary: Where a run would write (absent).
    """

    root: str
    data: str
    registry: str
    weights: str
    pipeline_root: str
    summary: str

    def run_local(self, *extra: str, **replace: str) -> list[str]:
        """A ``run-local`` command line that passes the up-front check, with ``replace``
        (flag name without dashes, e.g. ``data_uri=...``) substituted and ``extra`` appended."""
        flags = {
            "data-uri": self.data, "registry-uri": self.registry, "model-name": "digits", "base-weights": self.weights,
            "width-multiplier": "0.35", "image-size": "32", "epochs": "1", "pipeline-root": self.pipeline_root,
            "summary": self.summary,
        }
        flags.update({k.replace("_", "-"): v for k, v in replace.items()})
        return ["run-local", *[x for k, v in flags.items() if v is not None for x in (f"--{k}", v)], *extra]


def marked(category: str, table: list) -> list:
    """The ``pytest.param`` rows of ``table``, each marked ``reliability(category)``."""
    return [pytest.param(*row.values, marks=[*row.marks, pytest.mark.reliability(category)], id=row.id) for row in table]


def write_file(folder: str, name: str, content: bytes | str = b"") -> str:
    """Writes ``folder/name`` (folders made as needed) and returns its path."""
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
    return path


def png(seed: int, size: tuple[int, int] = (8, 8)) -> bytes:
    """A small RGB PNG, its pixels from ``seed``."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from components.base_models import build_base_model
    from components.registry import open_registry

    root = tmp_path_factory.mktemp("world")
    for c, label in enumerate("ab"):
        (root / "data" / label).mkdir(parents=True)
        for i in range(6):
            (root / "data" / label / f"{i}.png").write_bytes(png(10 * c + i))
    source = root / "export"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(b"graph")
    (source / "variables" / "variables.index").write_bytes(b"index")
    open_registry(str(root / "registry")).push("digits", str(source), METADATA, alias="dev", actor="ci")
    weights = str(root / "mobilenet_v2_0.35_32.weights.h5")
    build_base_model("mobilenet_v2", 32, None, 0.35).save_weights(weights)
    return World(str(root), str(root / "data"), str(root / "registry"), weights, str(root / "runs"), str(root / "summary.json"))


@pytest.fixture()
def guard(monkeypatch) -> Iterator[list]:
    """Stands in for the kfp.local run behind the up-front check: a case that gets past the
    check records its parameters here instead of running the pipeline for minutes."""
    from pipelines import local

    reached: list[dict[str, Any]] = []

    def run_local(params, pipeline_root, package_path=None, docker=None, profile=None):
        reached.append(params)
        return local.LocalRunResult(status="succeeded", blessed=False, reason="accuracy 0.1 < floor 0.5", accuracy=0.1,
                                    macro_f1=0.1, pushed=None, pipeline_root=pipeline_root, run_dir=None, seconds=0.0)

    monkeypatch.setattr(local, "run_local", run_local)
    yield reached


def snapshot(*folders: str) -> dict[str, str]:
    """Every entry under ``folders``: path -> content SHA-256 (``dir`` for folders, the
    target for links)."""
    found: dict[str, str] = {}
    for folder in folders:
        for parent, dirs, files in os.walk(folder):
            for d in dirs:
                found[os.path.join(parent, d)] = "dir"
            for f in files:
                path = os.path.join(parent, f)
                if os.path.islink(path):
                    found[path] = "link:" + os.readlink(path)
                elif os.path.isfile(path):
                    with open(path, "rb") as fh:
                        found[path] = hashlib.sha256(fh.read()).hexdigest()
                else:
                    found[path] = "special"
    return found


def assert_refused(code: int, stderr: str, expected_code: int, fragments: tuple[str, ...], before: dict, after: dict) -> None:
    """The checks every case makes (see the module docstring)."""
    lines = stderr.strip().splitlines()
    assert code == expected_code, stderr
    assert lines and lines[-1].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[-1], f"{fragment!r} not in {lines[-1]!r}"
    assert "Traceback" not in stderr
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    assert (added, removed, changed) == ([], [], []), "the refused command changed files"


def run_cli(argv: list[str], capsys, *folders: str) -> tuple[int, str, dict, dict]:
    """Runs the command line in this process; returns its exit code, its stderr, and snapshots
    of ``folders`` before and after."""
    from pipelines.cli import main

    before = snapshot(*folders)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as usage_error:  # argparse's errors end the process, as in a shell
        code = usage_error.code
    stderr = capsys.readouterr().err
    return code, stderr, before, snapshot(*folders)


def step_error(step: str, body, args: Any = None) -> tuple[int, str]:
    """What ``run-local`` reports when a step's body raises: the body runs inside
    ``components.step_errors.reported`` (as every component body does), and its record becomes
    the run's error (``pipelines.local.step_failed``) and exit code (``pipelines.errors``).

    Returns:
        ``(exit code, "error: ..." line)``.
    """
    import json
    import tempfile

    from components.step_errors import ERROR_FILE_ENV, reported
    from pipelines import errors
    from pipelines.local import step_failed

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "errors.jsonl")
        previous = os.environ.get(ERROR_FILE_ENV)
        os.environ[ERROR_FILE_ENV] = path
        try:
            with pytest.raises(Exception):
                with reported(step):
                    body()
        finally:
            if previous is None:
                os.environ.pop(ERROR_FILE_ENV)
            else:
                os.environ[ERROR_FILE_ENV] = previous
        with open(path) as f:
            record = json.loads(f.readlines()[-1])
    code, message = errors.exit_code_for(step_failed(record), args)
    return code, f"error: {message}"
