import os
import subprocess
import sys


def test_preprocessing_fn_with_tft_unit():
    """tft_unit.assertAnalyzeAndTransformResults: decode, resize, scale, sorted vocabulary."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, os.path.join(root, "tests", "tft_cases", "preprocessing_fn_case.py")],
        capture_output=True, text=True, cwd=root, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "OK (skipped=1)" in proc.stderr
