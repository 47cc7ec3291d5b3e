"""The benchmark's own measuring helpers (the rows themselves run in `make bench`)."""

import subprocess
import sys

from bench.workers import peak_rss_mib


def test_peak_rss_of_a_worker_is_its_own_not_its_parents():
    # Regression: the finetune memory row read getrusage(RUSAGE_SELF).ru_maxrss in a worker the
    # bench runner had started, and Linux carries ru_maxrss across exec: both dataset sizes
    # reported the runner's 2,990 MiB. A parent holding 600 MiB starts a child that holds little.
    ballast = bytearray(600 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page so it is resident
    assert peak_rss_mib() > 600
    code = "import resource; from bench.workers import peak_rss_mib; print(peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    own, carried = map(float, subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())
    assert own < 200, own
    assert carried > 600  # what the old measurement read
    del ballast
