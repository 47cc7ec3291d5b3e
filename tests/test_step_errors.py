"""What every component body runs inside: the error line for run-local and the quick process exit."""

import json
import subprocess
import sys
import textwrap

from components.step_errors import ERROR_FILE_ENV


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)


def test_a_step_process_ends_with_everything_alive_frozen():
    # The checker is registered before the step body, so it runs after end_process_quickly's
    # handler (atexit runs last-registered first): by then every object alive is frozen, which
    # is what keeps CPython's teardown collections from walking them.
    proc = _python("""
        import atexit, gc
        atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count()))
        from components.step_errors import reported
        alive = [[i] for i in range(100_000)]
        with reported("evaluate"):
            pass
        print("frozen in the body:", gc.get_freeze_count())
    """)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "frozen in the body: 0"  # the body itself collects garbage as usual
    assert lines[1].startswith("frozen at exit: ") and int(lines[1].split()[-1]) > 100_000


def test_the_quick_exit_is_registered_once_per_process():
    proc = _python("""
        import atexit
        from components.step_errors import reported
        before = atexit._ncallbacks()
        for step in ("preprocess", "finetune"):
            with reported(step):
                pass
        print(atexit._ncallbacks() - before)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


def test_a_failing_step_still_exits_with_its_error_and_its_line(tmp_path):
    errors = tmp_path / "errors.jsonl"
    proc = _python("""
        from components.step_errors import reported
        with reported("finetune"):
            raise ValueError("epochs must be at least 1, got 0")
    """, env={ERROR_FILE_ENV: str(errors)})
    assert proc.returncode == 1
    assert "ValueError: epochs must be at least 1, got 0" in proc.stderr.splitlines()[-1]
    assert [json.loads(line) for line in errors.read_text().splitlines()] == [
        {"step": "finetune", "error": "ValueError: epochs must be at least 1, got 0"}
    ]
