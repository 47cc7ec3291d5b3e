"""The benchmark's frame: a registry of rows, their result record, and measuring helpers.

A row is a function ``fn(ctx) -> Result`` registered with ``@row(name, ...)``. It measures two
sides, A (the product) and B (the baseline it is held against), on the same data in the same run,
interleaving their repetitions (A, B, A, B, ...) so drifting load on a shared machine hits both
alike; the ratio of the medians is then compared with the row's goal. Adding a row is adding one
decorated function in any module that ``bench.run`` imports.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Goal:
    """What the ratio A/B must satisfy: ``op`` is ``">="`` or ``"<="``; None threshold = information only."""

    op: str = ">="
    threshold: float | None = None

    def check(self, ratio: float | None) -> bool | None:
        if self.threshold is None or ratio is None:
            return None
        return ratio >= self.threshold if self.op == ">=" else ratio <= self.threshold

    def __str__(self) -> str:
        return "info" if self.threshold is None else f"A/B {self.op} {self.threshold:g}"


@dataclasses.dataclass
class Result:
    """One row of the table (and of the JSON file).

    ``a`` and ``b`` are the samples of each side, in ``unit``; the row's values are their medians,
    ``ratio`` is median(A) / median(B), or, for a ``paired`` row (one whose repetitions are
    interleaved pairs decided pair by pair: A's i-th sample with B's i-th), the median of the
    pairs' A/B. With three pairs and one disturbed run, the ratio of the medians mixes samples of
    different pairs (A 81.6 / 62.8 / 55.5 s, B 50.0 / 60.5 / 51.6 s: 62.8 / 51.6 = 1.22, although
    the pairs read 1.63, 1.04, 1.08); the median of the pairs' ratios is the verdict of the majority
    of pairs. ``status`` is ``ok``, ``pending`` (the product function
    the row needs does not exist yet) or ``error``. ``details``: what the notes were derived from
    (JSON-serializable, e.g. each run's per-step timings), kept in the JSON file only.
    """

    name: str
    compared: str
    unit: str
    goal: Goal
    a: list[float] = dataclasses.field(default_factory=list)
    b: list[float] = dataclasses.field(default_factory=list)
    accuracy: str = ""
    notes: str = ""
    status: str = "ok"
    seconds: float = 0.0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    paired: bool = False

    @property
    def ratio(self) -> float | None:
        if self.paired:
            if not self.a or len(self.a) != len(self.b) or 0 in self.b:
                return None
            return statistics.median(x / y for x, y in zip(self.a, self.b))
        if not self.a or not self.b or statistics.median(self.b) == 0:
            return None
        return statistics.median(self.a) / statistics.median(self.b)

    @property
    def passed(self) -> bool | None:
        return self.goal.check(self.ratio) if self.status == "ok" else None

    def to_json(self) -> dict[str, Any]:
        def spread(xs: list[float]) -> dict[str, float] | None:
            return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)} if xs else None

        return {
            "name": self.name, "compared": self.compared, "unit": self.unit, "status": self.status,
            "a": spread(self.a), "b": spread(self.b), "a_samples": self.a, "b_samples": self.b,
            "ratio": self.ratio, "paired": self.paired, "goal": str(self.goal), "passed": self.passed,
            "repetitions": {"a": len(self.a), "b": len(self.b)}, "accuracy": self.accuracy or None,
            "notes": self.notes, "seconds": round(self.seconds, 1), "details": self.details,
        }


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    fn: Callable[["Context"], Result]
    description: str
    slow: bool


ROWS: dict[str, Row] = {}


def row(name: str, description: str, slow: bool = False) -> Callable:
    """Registers ``fn(ctx) -> Result`` as the row ``name`` (table order = registration order)."""

    def register(fn: Callable[["Context"], Result]) -> Callable[["Context"], Result]:
        if name in ROWS:
            raise ValueError(f"bench row {name!r} is registered twice")
        ROWS[name] = Row(name, fn, description, slow)
        return fn

    return register


class Context:
    """Shared state of one benchmark run: scratch folder, repetition counts, memoized data.

    Rows share expensive inputs (written images, preprocess runs) through ``memo``, so a row run
    alone (``--only``) computes what it needs and a full run computes it once.
    """

    def __init__(self, quick: bool, workdir: str, log: Callable[[str], None], reps: int | None = None):
        self.quick = quick
        self.reps_override = reps
        self.workdir = workdir
        self.log = log
        self._memo: dict[str, Any] = {}

    def reps(self, fast: bool) -> int:
        """Repetitions per side: fast rows 5 (3 with --quick), slow rows 3 (1 with --quick);
        ``--reps N`` sets N for every row (rows that cap their repetitions keep their cap)."""
        if self.reps_override is not None:
            return self.reps_override
        if fast:
            return 3 if self.quick else 5
        return 1 if self.quick else 3

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

    def fresh_dir(self, prefix: str) -> str:
        return tempfile.mkdtemp(prefix=prefix + "-", dir=self.workdir)

    def run_worker(self, kind: str, request: dict[str, Any]) -> dict[str, Any]:
        """Runs ``bench.workers`` KIND in a fresh Python process; returns its result plus
        ``process_seconds`` (wall time of the whole process, interpreter start included).

        The worker's output goes to a log file; its tail is raised with the error on failure.
        """
        tmp = self.fresh_dir(f"worker-{kind}")
        req, res, log = (os.path.join(tmp, n) for n in ("request.json", "result.json", "log.txt"))
        with open(req, "w") as f:
            json.dump(request, f)
        start = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.run([sys.executable, "-m", "bench.workers", kind, req, res], cwd=REPO_ROOT,
                                  stdout=out, stderr=subprocess.STDOUT, check=False)
        seconds = time.perf_counter() - start
        if proc.returncode != 0 or not os.path.exists(res):
            with open(log) as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"bench worker {kind!r} exited with {proc.returncode}; log {log}:\n{tail}")
        with open(res) as f:
            result = json.load(f)
        shutil.rmtree(tmp, ignore_errors=True)
        return {**result, "process_seconds": seconds}


def time_command(argv: list[str]) -> float:
    """Wall seconds of one fresh process running ``argv`` (output discarded).

    Raises:
        subprocess.CalledProcessError: the command failed.
    """
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def interleave(reps: int, side_a: Callable[[], float], side_b: Callable[[], float]) -> tuple[list[float], list[float]]:
    """Runs A, B, A, B, ... ``reps`` times each; returns the two sample lists."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(reps):
        a.append(side_a())
        b.append(side_b())
    return a, b


def fmt(value: float) -> str:
    """A number for the table: whole numbers from 100 up, else three significant digits."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def spread_text(xs: list[float]) -> str:
    """``min / median / max`` of ``xs`` (empty string when there is no sample)."""
    if not xs:
        return ""
    return " / ".join(fmt(v) for v in (min(xs), statistics.median(xs), max(xs)))
