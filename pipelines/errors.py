"""The one place where the command line turns an exception into an exit code and an ``error:`` line.

Every command function is wrapped by :func:`command`. An exception of a type in the table below
becomes one ``error: <message>`` line on stderr and the table's exit code; any other exception
propagates with its traceback (a bug, not a user's mistake). argparse's own usage errors exit 2
before a command runs, so 2 means "fix the input" throughout.

===============================================  ====  ==========================================
exception                                        exit  message
===============================================  ====  ==========================================
``pipelines.local.PipelineRunError``             1     the failed step and its error
``kfp_server_api.ApiException``                  2     ``KFP API answered <status> <reason>: ...``
``urllib3.exceptions.HTTPError``                 2     ``cannot reach KFP at <--host>: ...``
``components.registry.RegistryError``            2     the error's own message
``ValueError``, ``OSError`` (``TimeoutError``)   2     the error's own message
===============================================  ====  ==========================================

A message is always printed as one line (``components.step_errors.one_line``: TensorFlow's
multi-line graph errors keep the op's own message). Three more exit codes:

* 3 (``EXIT_NOT_PUSHED``): ``run-local --fail-if-not-pushed`` ran the pipeline to its end but the
  model was not blessed, so nothing was pushed; cron and CI can tell it from a push (0) and from a
  failure (1, 2).
* 130 (``EXIT_INTERRUPTED``, 128 + SIGINT): Ctrl-C stopped the command; one ``error: interrupted``
  line, no traceback (``run-local`` names the step it stopped in and removes that step's partial
  outputs).
* 141 (``EXIT_BROKEN_PIPE``, 128 + SIGPIPE, what a shell reports for a command killed by SIGPIPE):
  the reader of the output went away (``kfp-finetune models describe ... | head``); nothing is
  printed, no traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable

from components.step_errors import one_line

EXIT_OK = 0
# The work ran and failed: a step of a local run, or an awaited KFP run that did not succeed.
EXIT_FAILED = 1
# Bad input (a value, a file, a refused request); argparse uses 2 for usage errors too.
EXIT_BAD_INPUT = 2
# The run completed, but nothing was pushed (run-local --fail-if-not-pushed).
EXIT_NOT_PUSHED = 3
# Stopped by Ctrl-C: 128 + SIGINT (2), what a shell reports for a command killed by SIGINT.
EXIT_INTERRUPTED = 130
# The output's reader went away: 128 + SIGPIPE (13).
EXIT_BROKEN_PIPE = 141

Command = Callable[[argparse.Namespace], int]


def api_error_message(error: BaseException) -> str:
    """One line for an error answer of the KFP API (``kfp_server_api.ApiException``).

    Args:
        error: has ``status`` (HTTP status), ``reason`` (its phrase) and ``body`` (str or bytes,
            usually JSON with ``message`` or ``error``); missing ones read as ``None``.

    Returns:
        ``"KFP API answered <status> <reason>"``, plus ``": <detail>"`` when the body has text:
        its JSON ``message`` (else ``error``, else the body), whitespace collapsed, at most 300
        characters.
    """
    status = getattr(error, "status", None)
    reason = getattr(error, "reason", None)
    body = getattr(error, "body", None)
    detail = body
    if isinstance(body, (str, bytes)):
        try:
            decoded = json.loads(body)
            detail = decoded.get("message") or decoded.get("error") or body if isinstance(decoded, dict) else body
        except (json.JSONDecodeError, UnicodeDecodeError):
            detail = body
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    text = " ".join(str(detail or "").split())
    return f"KFP API answered {status} {reason}" + (f": {text[:300]}" if text else "")


def _own_message(error: BaseException, args: argparse.Namespace) -> str:
    return str(error)


def _unreachable(error: BaseException, args: argparse.Namespace) -> str:
    return f"cannot reach KFP at {getattr(args, 'host', None)}: {error}"


# (module, class, exit code, message), first match wins. Classes are looked up in sys.modules
# only: an exception of a module never imported cannot have been raised, and importing kfp's
# REST client here would slow every command (the models commands never use it).
_TABLE: tuple[tuple[str, str, int, Callable[[BaseException, argparse.Namespace], str]], ...] = (
    ("pipelines.local", "PipelineRunError", EXIT_FAILED, _own_message),
    ("kfp_server_api.exceptions", "ApiException", EXIT_BAD_INPUT, lambda error, args: api_error_message(error)),
    ("urllib3.exceptions", "HTTPError", EXIT_BAD_INPUT, _unreachable),
    ("components.registry", "RegistryError", EXIT_BAD_INPUT, _own_message),
    ("builtins", "ValueError", EXIT_BAD_INPUT, _own_message),
    ("builtins", "OSError", EXIT_BAD_INPUT, _own_message),
)


def exit_code_for(error: BaseException, args: argparse.Namespace) -> tuple[int, str] | None:
    """The exit code and ``error:`` message for an exception raised by a command.

    Args:
        error: what the command raised.
        args: the command's parsed arguments (``host`` names the KFP server in messages).

    Returns:
        ``(exit code, message)`` from the module's table, or ``None`` for an exception that is
        not in it (it should propagate).
    """
    for module, name, code, message in _TABLE:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(error, cls):
            return code, message(error, args)
    return None


def command(func: Command) -> Command:
    """Wraps a command function so that the errors in the module's table become exit codes.

    Args:
        func: takes the parsed arguments and returns an exit code.

    Returns:
        A function that returns ``func``'s exit code, or, when ``func`` raises an exception in
        the table, prints ``error: <message>`` to stderr and returns the table's code. It is
        marked with ``maps_errors = True``.
    """

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except BrokenPipeError:
            raise  # not the command's failure: its reader left (see quiet_broken_pipe)
        except Exception as error:
            found = exit_code_for(error, args)
            if found is None:
                raise
            code, message = found
            print(f"error: {one_line(message)}", file=sys.stderr)
            return code

    run.maps_errors = True  # type: ignore[attr-defined]
    return run


def quiet_broken_pipe() -> int:
    """Ends a command whose output's reader has gone away, without a traceback.

    Points standard output at ``os.devnull`` so that the interpreter's final flush of what is
    still buffered cannot fail again (the recipe of Python's ``signal`` documentation, "Note on
    SIGPIPE").

    Returns:
        ``EXIT_BROKEN_PIPE``.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def interrupted(error: KeyboardInterrupt) -> int:
    """Ends a command stopped by Ctrl-C with one ``error: interrupted[: <what it says>]`` line.

    Returns:
        ``EXIT_INTERRUPTED``.
    """
    detail = str(error)
    print(f"error: interrupted{': ' + one_line(detail) if detail else ''}", file=sys.stderr)
    return EXIT_INTERRUPTED
