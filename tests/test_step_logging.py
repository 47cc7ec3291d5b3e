"""TensorFlow's logging, set once per step (``components.step_logging``): the level chosen, the
native lines kept, and a real step process that loads TensorFlow and lists its devices quietly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from components.step_logging import LOG_LEVEL_ENV, driver_loadable, filter_native_log, tf_log_level

CAPTURED = """WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796416264.543429   20652 port.cc:153] oneDNN custom operations are on.
I0000 00:00:1796416264.587719   20652 cpu_feature_guard.cc:227] This TensorFlow binary is optimized.
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow.
W0000 00:00:1796416264.600000   20652 some_op.cc:12] a warning
E0000 00:00:1796416268.468451   20652 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)
/site-packages/keras/x.py:74: UserWarning: something Python said
plain line
"""


@pytest.mark.parametrize("level, kept", [
    ("0", CAPTURED.splitlines()),
    ("1", CAPTURED.splitlines()[4:]),
    ("2", CAPTURED.splitlines()[5:]),
    ("3", CAPTURED.splitlines()[6:]),
])
def test_native_lines_below_the_level_are_dropped_with_their_continuations(level, kept):
    assert filter_native_log(CAPTURED, level).splitlines() == kept


@pytest.mark.parametrize("count, environ, driver, level", [
    (0, {}, False, "3"),   # the CUDA probe's error is certain and says only "no GPU here"
    (0, {}, True, "2"),
    (1, {}, False, "2"),   # a step that asked for a GPU keeps every error line
    (0, {LOG_LEVEL_ENV: "0"}, False, "0"),
    (2, {LOG_LEVEL_ENV: " 3 "}, True, "3"),
])
def test_the_level_follows_the_request_the_driver_and_the_override(count, environ, driver, level):
    assert tf_log_level(count, environ, driver) == level


def test_an_invalid_override_is_refused_by_name():
    with pytest.raises(ValueError, match=r"KFP_FINETUNE_TF_LOG_LEVEL='debug': expected one of 0, 1, 2, 3"):
        tf_log_level(0, {LOG_LEVEL_ENV: "debug"}, False)


_STEP = ("from components.step_logging import quiet_tensorflow; quiet_tensorflow('finetune', 0); "
         "import tensorflow as tf; print('devices', len(tf.config.list_physical_devices()))")


def _step_stderr(**environ: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in (LOG_LEVEL_ENV, "TF_CPP_MIN_LOG_LEVEL")}
    proc = subprocess.run([sys.executable, "-c", _STEP], capture_output=True, text=True, env={**env, **environ}, timeout=300)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1].startswith("devices "), proc.stderr
    return proc.stderr


@pytest.mark.skipif(driver_loadable(), reason="an NVIDIA driver is here: TensorFlow's CUDA probe does not fail")
def test_a_cpu_step_loads_tensorflow_without_a_line_and_the_override_shows_them_all():
    assert _step_stderr() == ""
    everything = _step_stderr(**{LOG_LEVEL_ENV: "0"})  # stdout also says: "finetune: TensorFlow log level 0 (...)"
    assert "oneDNN custom operations" in everything and "failed call to cuInit" in everything
