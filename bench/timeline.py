"""Where a ``kfp.local`` run spends its time, task by task, read from its own log stream.

``kfp.local`` (kfp 2.17.3) writes to ``sys.stdout``: its own log records (``Executing task
'<name>'``, ``Task '<name>' finished ...``) and, line by line as they arrive, the output of each
task's process, whose executor logs ``Looking for component `<name>` `` once the interpreter has
started and imported ``kfp.dsl.executor_main``, and ``Wrote executor output file`` once the
component body has returned and its outputs are written. Both kinds of record are flushed as they
are written, so the time a line reaches this process is the time it was written (to within the
pipe's latency, milliseconds). ``TimestampedStream`` stands in for ``sys.stdout`` during the run
and keeps the lines with their arrival time; ``task_timings`` turns them into per-task phases.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, TextIO

_EXECUTING = re.compile(r"Executing task \S*'([\w-]+)'")
_FINISHED = re.compile(r"Task \S*'([\w-]+)'\S* finished with status")
_READY = re.compile(r"Looking for component `(\w+)`")
_WROTE = "Wrote executor output file"


class TimestampedStream:
    """A text stream that passes everything to ``target`` and keeps each complete line with the
    ``time.perf_counter()`` of the write that completed it (``lines``)."""

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self.lines: list[tuple[float, str]] = []
        self._partial = ""

    def write(self, text: str) -> int:
        now = time.perf_counter()
        *complete, self._partial = (self._partial + text).split("\n")
        self.lines.extend((now, line) for line in complete)
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...: the target's
        return getattr(self.target, name)


@dataclasses.dataclass(frozen=True)
class TaskTiming:
    """One task of a ``kfp.local`` run, in seconds (``time.perf_counter`` differences).

    ``launch``: from ``Executing task`` to the executor's first line (``sh``, the interpreter
    start and ``import kfp.dsl.executor_main``). ``body``: from there to ``Wrote executor output
    file`` (loading the component module, the body's imports, the step's work, writing the
    outputs). ``exit``: from there to ``Task ... finished`` (the interpreter's teardown and
    ``kfp.local`` collecting the task's outputs). ``after``: from ``Task ... finished`` to the
    next ``Executing task`` or, for the last task, to the end of the stream (``kfp.local``'s own
    bookkeeping between tasks).
    """

    name: str
    launch: float
    body: float
    exit: float
    after: float

    @property
    def total(self) -> float:
        """The task's wall time as ``kfp.local`` saw it (launch + body + exit)."""
        return self.launch + self.body + self.exit


def task_timings(lines: list[tuple[float, str]], end: float) -> list[TaskTiming]:
    """The tasks of one run, in execution order, from ``TimestampedStream.lines``.

    Args:
        lines: ``(perf_counter seconds, line)`` in arrival order.
        end: ``perf_counter`` when the run returned (closes the last task's ``after``).

    Returns:
        One ``TaskTiming`` per task that finished.

    Raises:
        ValueError: a task finished without the executor lines between its start and end (a
            ``kfp`` whose log lines differ from 2.17.3's), naming the task.
    """
    tasks: list[tuple[str, dict[str, float]]] = []
    for t, line in lines:
        if m := _EXECUTING.search(line):
            tasks.append((m.group(1), {"start": t}))
            continue
        if not tasks:
            continue
        name, marks = tasks[-1]
        if _READY.search(line):
            marks.setdefault("ready", t)
        elif _WROTE in line:
            marks["wrote"] = t
        elif (m := _FINISHED.search(line)) and m.group(1) == name:
            marks["finished"] = t
    done = [(name, marks) for name, marks in tasks if "finished" in marks]
    out = []
    for i, (name, marks) in enumerate(done):
        if "ready" not in marks or "wrote" not in marks:
            raise ValueError(f"task {name!r}: no executor start or output line between its start and end in the log")
        following = done[i + 1][1]["start"] if i + 1 < len(done) else end
        out.append(TaskTiming(name, marks["ready"] - marks["start"], marks["wrote"] - marks["ready"],
                              marks["finished"] - marks["wrote"], following - marks["finished"]))
    return out
