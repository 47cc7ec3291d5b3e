"""What a step logs: TensorFlow's logging set once per step, and the step's own progress lines.

``quiet_tensorflow(step, accelerator_count)`` is the first call of every component body that uses
TensorFlow (``components.kfp_components``), before anything imports TensorFlow in the step's
process. It picks the level of TensorFlow's native (C++) log, ``TF_CPP_MIN_LOG_LEVEL``, and of
its Python loggers (``tensorflow``, ``absl``), then imports TensorFlow with the native lines
printed while it loads filtered to that level:

====  ==========================  ======================================================
level  native lines kept           Python loggers ``tensorflow`` and ``absl``
====  ==========================  ======================================================
0      all (INFO and up)           INFO
1      WARNING and up              WARNING
2      ERROR and up                ERROR
3      FATAL only                  ERROR
====  ==========================  ======================================================

The default is 2 (errors shown), except for a step that asked for no GPU on a machine without
the NVIDIA driver (``libcuda.so.1`` cannot be loaded): there it is 3. Why: TensorFlow's Linux
wheels are CUDA builds that probe the driver whenever devices are listed, and without one that
probe always logs ``E ... cuda_platform.cc:52] failed call to cuInit: ... UNKNOWN ERROR (303)``,
an error-level line that says only "no GPU here", on every healthy CPU step. Hiding the GPU with
``CUDA_VISIBLE_DEVICES`` does not avoid it (measured with TensorFlow 2.21: the same line with
``""`` and ``-1``), so the GPUs are left as they are: a step never has a GPU hidden from it.
The lines TensorFlow prints while its libraries load (the oneDNN note, "Could not find cuda
drivers", the CPU-instructions note, absl's "All log messages before absl::InitializeLog()")
come before ``TF_CPP_MIN_LOG_LEVEL`` takes effect, so the import runs with the process's stderr
captured and only the lines at or above the level are written back.

``KFP_FINETUNE_TF_LOG_LEVEL`` (0-3) overrides the level, for debugging: 0 shows everything,
the import's lines included, and captures nothing. It is read when a step starts, never at import.

``step_line(step, message, started)`` prints the product's own lines: ``<step>: <message>
(<seconds> s)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import sys
import tempfile
import time
from typing import Iterator, Mapping

LOG_LEVEL_ENV = "KFP_FINETUNE_TF_LOG_LEVEL"
LEVELS = ("0", "1", "2", "3")
# The NVIDIA driver's library; a GPU node's driver brings it (components.accelerators).
DRIVER_LIBRARY = "libcuda.so.1"

# absl's native log prefix, e.g. "E0000 00:00:1796416268.468451   20652 cuda_platform.cc:52] "
# (before absl is initialized its time field is "00:00:<seconds since the epoch>").
NATIVE_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]]+\] ")
_NATIVE_RANK = {"I": 0, "W": 1, "E": 2, "F": 3}
# absl's own note before its first line: about logging itself, so ranked with INFO.
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# A line that starts a Python warning or traceback is never a native message's continuation.
_PYTHON_LINE = re.compile(r"^(Traceback \(most recent call last\)|\S.*:\d+: \w*(Warning|Error)\b)")
_PYTHON_LEVELS = {"0": logging.INFO, "1": logging.WARNING, "2": logging.ERROR, "3": logging.ERROR}


def driver_loadable() -> bool:
    """Whether the NVIDIA driver library can be loaded in this process (without a GPU call)."""
    try:
        ctypes.CDLL(DRIVER_LIBRARY)
    except OSError:
        return False
    return True


def tf_log_level(accelerator_count: int, environ: Mapping[str, str], has_driver: bool) -> str:
    """The step's TensorFlow log level (see the module docstring's table).

    Args:
        accelerator_count: GPUs the step asked for, >= 0.
        environ: The process environment; ``KFP_FINETUNE_TF_LOG_LEVEL`` overrides the default.
        has_driver: Whether ``libcuda.so.1`` loads (``driver_loadable``).

    Returns:
        ``"0"`` to ``"3"``.

    Raises:
        ValueError: ``KFP_FINETUNE_TF_LOG_LEVEL`` is set to something else than 0-3.
    """
    chosen = environ.get(LOG_LEVEL_ENV, "").strip()
    if chosen:
        if chosen not in LEVELS:
            raise ValueError(f"{LOG_LEVEL_ENV}={chosen!r}: expected one of {', '.join(LEVELS)} "
                             "(0 all TensorFlow lines, 1 warnings and up, 2 errors and up, 3 fatal only)")
        return chosen
    return "3" if accelerator_count == 0 and not has_driver else "2"


def filter_native_log(text: str, level: str) -> str:
    """The lines of ``text`` (what TensorFlow printed to stderr) that ``level`` keeps.

    A native line (absl's prefix) is kept when its severity is at least ``level`` (I=0, W=1, E=2,
    F=3); lines without the prefix that follow one belong to it (a message over several lines).
    absl's preamble ranks as INFO. Every other line (Python warnings, tracebacks, anything
    unknown) is kept.

    Args:
        text: Captured stderr, lines ended by ``\\n``.
        level: ``"0"`` to ``"3"``.

    Returns:
        The kept lines, each ended by ``\\n`` (empty when none).
    """
    threshold = int(level)
    kept, keeping, in_native = [], True, False
    for line in text.splitlines():
        match = NATIVE_LINE.match(line)
        if match:
            keeping, in_native = _NATIVE_RANK[match[1]] >= threshold, True
        elif line.strip() == _ABSL_PREAMBLE:
            keeping, in_native = threshold == 0, True
        elif not in_native or _PYTHON_LINE.match(line):
            keeping, in_native = True, False
        if keeping:
            kept.append(line + "\n")
    return "".join(kept)


@contextlib.contextmanager
def _stderr_filtered(level: str) -> Iterator[None]:
    """Captures file descriptor 2 (native libraries write there directly) for the block and
    writes back what ``filter_native_log`` keeps, also when the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            sys.stderr.write(filter_native_log(capture.read().decode("utf-8", "replace"), level))
            sys.stderr.flush()


def quiet_tensorflow(step: str, accelerator_count: int = 0, load: bool = True) -> str:
    """Sets TensorFlow's native and Python logging for this step and imports TensorFlow.

    Call it first in a step's process: ``TF_CPP_MIN_LOG_LEVEL`` is read when TensorFlow loads.
    When TensorFlow is already imported (a test calling a component body in its own process),
    only the Python loggers change.

    Args:
        step: The step's name, for the line that reports a level other than the default.
        accelerator_count: GPUs the step asked for (0 for every step but a GPU finetune).
        load: Import TensorFlow now, under the filter. False for a process that leaves
            TensorFlow to a child process (the preprocess worker), which inherits the
            environment and calls this function itself.

    Returns:
        The level used, ``"0"`` to ``"3"``.

    Raises:
        ValueError: an invalid ``KFP_FINETUNE_TF_LOG_LEVEL``.
    """
    level = tf_log_level(accelerator_count, os.environ, driver_loadable())
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = level
    if os.environ.get(LOG_LEVEL_ENV, "").strip():
        print(f"{step}: TensorFlow log level {level} ({LOG_LEVEL_ENV})", flush=True)
    if load and "tensorflow" not in sys.modules:
        with contextlib.nullcontext() if level == "0" else _stderr_filtered(level):
            import tensorflow  # noqa: F401 (loaded here, under the filter)
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(_PYTHON_LEVELS[level])
    return level


def step_line(step: str, message: str, started: float | None = None) -> None:
    """Prints ``<step>: <message>``, plus `` (<seconds> s)`` since ``started`` (a
    ``time.perf_counter()`` value) when given, and flushes (a step's log is read live)."""
    elapsed = f" ({time.perf_counter() - started:.1f} s)" if started is not None else ""
    print(f"{step}: {message}{elapsed}", flush=True)
