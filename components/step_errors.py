"""One readable line per failed step, for ``kfp-finetune run-local``.

A step's traceback is buried in the runner's log; ``run-local`` sets ``KFP_FINETUNE_ERROR_FILE``
(read when a step fails, never at import) and prints the recorded line when the run fails.
"""

import contextlib
import json
import os
from typing import Iterator

ERROR_FILE_ENV = "KFP_FINETUNE_ERROR_FILE"


@contextlib.contextmanager
def reported(step: str) -> Iterator[None]:
    """Runs a step body; on an exception, appends ``{"step", "error"}`` to the error file and
    re-raises the exception unchanged (the step still fails with its full traceback)."""
    try:
        yield
    except Exception as e:
        path = os.environ.get(ERROR_FILE_ENV)
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"step": step, "error": f"{type(e).__name__}: {e}"}) + "\n")
        raise


def read_errors(path: str) -> list[dict]:
    """The ``{"step", "error"}`` records in ``path`` (empty when the file is missing)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
