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


GRAPH_ERROR = (
    "Graph execution error:\n\nDetected at node WriteFile defined at (most recent call last):\n"
    '  File "/app/train.py", line 13, in <module>\n\n  File "/app/train.py", line 3, in write\n\n'
    "/out/model/variables; No space left on device\n\t [[{{node WriteFile}}]]\n"
    "Hint: If you want to see a list of allocated tensors when OOM happens, add report_tensor_allocations_upon_oom. [Op:__inference_write_46]"
)


def test_one_line_keeps_what_names_the_culprit():
    from components.step_errors import one_line

    assert one_line(GRAPH_ERROR) == "/out/model/variables; No space left on device (TensorFlow op WriteFile)"
    assert one_line("{{function_node __wrapped__IteratorGetNext_output_types_1_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
                    "corrupted record at 244 [Op:IteratorGetNext] name: ") == "corrupted record at 244 (TensorFlow op IteratorGetNext)"
    assert one_line("write failed:\n  /out/a: Input/output error\n") == "write failed:; /out/a: Input/output error"
    assert one_line("dropout must be in [0, 1), got 1.5") == "dropout must be in [0, 1), got 1.5"
    assert one_line("") == ""
