"""The ``kfp-finetune`` command line (also ``python -m pipelines``).

Commands: compile, run-local, demo, submit, schedule, runs (list/get/cancel), schedules
(list/pause/resume/delete), models (list/describe/promote/rollback/check/...), predict, doctor. Each
command function is wrapped by ``pipelines.errors.command``: an error prints one ``error: ...`` line
on stderr and exits 1 (a failed run) or 2 (bad input). ``run-local``, ``submit`` and ``schedule``
take the pipeline parameters alike (``pipelines.params``). No parser accepts an abbreviated option
(``--data`` for ``--data-uri``): a later option sharing the prefix would silently change what it means.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from typing import Any, NoReturn, Sequence

from components.step_errors import one_line
from pipelines import docker_runner, doctor, errors, models_cli, params, preflight, remote_cli, runs_cli

DEFAULT_PIPELINE_ROOT = "kfp-local-root"
DEFAULT_DEMO_WORKDIR = "demo-work"


def _write_summary(path: str | None, summary: dict[str, Any]) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, path)


def _print_result(summary: dict[str, Any]) -> None:
    m = summary["metrics"]
    print(f"\ntest accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}")
    print(f"blessed: {summary['blessed']} ({summary['reason']})")
    pushed = summary.get("pushed")
    if pushed:
        print(f"pushed: model {pushed['model']!r} version {pushed['version']} at {pushed['uri']}, alias {pushed['alias']!r}")
    elif summary.get("not_pushed"):
        print(f"not pushed: {summary['not_pushed']}")
    else:
        print("pushed: nothing")
    print(f"run outputs: {summary['run_dir']}")
    for name, path in (summary.get("reports") or {}).items():
        print(f"{name} report (charts, opens in a browser): {path}")


@errors.command
def _compile(args: argparse.Namespace) -> int:
    from pipelines.pipeline import compile_pipeline
    from pipelines.profiles import load_profile

    image = args.image or os.environ.get("KFP_FINETUNE_IMAGE") or None
    profile = load_profile(args.profile) if args.profile else None
    print(compile_pipeline(args.output, image=image, profile=profile))
    return 0


def _backbone_settings(arguments: dict[str, Any], docker: Any) -> dict[str, Any]:
    """``arguments`` with the settings of a local ``base_weights`` file's sidecar filled in
    (``components.backbones``); prints what was filled. Under the Docker runner the path is a
    container path, read on the host through its mount."""
    from components import backbones

    weights = arguments.get("base_weights", "")
    if not weights or "://" in weights or weights.lower() in ("imagenet", "none"):
        return arguments
    on_host = docker_runner.host_path(weights, docker) if docker is not None else weights
    card = backbones.read_card(on_host)
    if card is None:
        return arguments
    filled, notes = backbones.apply_card(arguments, card, backbones.card_path(on_host))
    for note in notes:
        print(f"backbone: {note}")
    return filled


@errors.command
def _run_local(args: argparse.Namespace) -> int:
    from components.image import COMPONENT_IMAGE
    from pipelines.local import PipelineRunError, check_output_locations, check_profile_locally, run_local
    from pipelines.profile_apply import parameter_defaults
    from pipelines.profiles import load_profile

    arguments = params.params_from_args(args)
    profile = load_profile(args.profile) if args.profile else None
    docker = docker_runner.options_from_args(args, (profile.image if profile else None) or COMPONENT_IMAGE)
    if profile is not None:
        check_profile_locally(profile, docker)
    arguments = _backbone_settings(arguments, docker)
    # A profile with a GPU makes accelerator_count 1 the compiled default (profile_apply.parameter_defaults).
    checked = {**(parameter_defaults(profile) if profile is not None and args.package is None else {}), **arguments}
    preflight.check_run(checked, args.pipeline_root, args.summary,
                        (lambda path: docker_runner.host_path(path, docker)) if docker else (lambda path: path),
                        gpus=docker.gpus if docker else None)
    check_output_locations(arguments, args.pipeline_root, args.summary, docker)
    try:
        result = run_local(arguments, args.pipeline_root, package_path=args.package, docker=docker, profile=profile)
    except PipelineRunError as e:
        _write_summary(args.summary, {"status": "failed", "error": str(e), "metrics": None, "blessed": None, "pushed": None,
                                      "pipeline_root": e.pipeline_root, "run_dir": e.run_dir})
        raise
    summary = result.summary()
    _print_result(summary)
    _write_summary(args.summary, summary)
    if args.fail_if_not_pushed and not summary["pushed"]:
        print(f"error: not pushed: {summary['reason']} (--fail-if-not-pushed)", file=sys.stderr)
        return errors.EXIT_NOT_PUSHED
    return 0


@errors.command
def _demo(args: argparse.Namespace) -> int:
    from pipelines import demo
    from pipelines.local import PipelineRunError

    overrides = {k: v for k, v in {"epochs": args.epochs, "fine_tune_epochs": args.fine_tune_epochs}.items() if v is not None}
    if args.summary:
        preflight.check_writable_file("--summary", args.summary)
    try:
        summary = demo.run_demo(args.workdir, overrides)
    except PipelineRunError as e:
        _write_summary(args.summary, {"status": "failed", "error": str(e), "metrics": None, "blessed": None, "pushed": None,
                                      "pipeline_root": e.pipeline_root, "run_dir": e.run_dir})
        raise
    _print_result(summary)
    backbone = summary["backbone"]
    print(f"data: {summary['data_uri']}\nbackbone weights: {summary['base_weights']} ({backbone['base_model']} width "
          f"{backbone['width_multiplier']}, {backbone['image_size']} px; settings in {backbone['sidecar']}, which "
          f"run-local --base-weights reads)\nregistry: {summary['registry_uri']}")
    print("registry entry:\n" + demo.describe_pushed(summary))
    _write_summary(args.summary, summary)
    return 0


@errors.command
def _predict(args: argparse.Namespace) -> int:
    from components.step_logging import quiet_tensorflow
    from pipelines.predict import predict

    quiet_tensorflow("predict")  # no cuInit E-line on a CPU machine (components/step_logging.py)

    failed = 0
    for row in predict(args.files, args.model_dir, args.registry_uri, args.model, args.version, args.alias):
        print(json.dumps(row))
        failed += "error" in row
    if failed:
        print(f"error: {failed} of {len(args.files)} file(s) could not be classified (see their 'error')", file=sys.stderr)
    return 1 if failed else 0


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one ``error:`` line, like every other error
    of the command line (argparse's own print the usage block first); sub-command parsers are
    made of the same class (``add_subparsers`` uses the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(errors.EXIT_BAD_INPUT, f"error: {self.prog}: {one_line(message)}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (each sets ``func(args) -> exit code``)."""
    from components.image import COMPONENT_IMAGE

    parser = Parser(
        prog="kfp-finetune",
        description="Fine-tune pretrained Keras image models as a Kubeflow Pipelines workflow.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("compile", help="write the compiled pipeline (KFP IR YAML)")
    p.add_argument("-o", "--output", default="kfp-finetune.yaml", metavar="FILE", help="output file (default: %(default)s)")
    p.add_argument("--image", metavar="REF",
                   help=f"component image (default: $KFP_FINETUNE_IMAGE, else the profile's image, else {COMPONENT_IMAGE})")
    p.add_argument("--profile", metavar="NAME|FILE",
                   help="cluster profile to compile in: kind, gke, eks, or a YAML file (see README: Cluster profiles)")
    p.set_defaults(func=_compile)

    p = sub.add_parser("run-local", help="run the whole pipeline on this machine with kfp.local")
    p.add_argument("--pipeline-root", default=DEFAULT_PIPELINE_ROOT, metavar="DIR", help="local folder for run artifacts (default: %(default)s)")
    p.add_argument("--package", metavar="FILE", help="a compiled pipeline YAML to run (default: compile the installed pipeline)")
    p.add_argument("--summary", metavar="FILE", help="write the run summary as JSON")
    p.add_argument("--profile", metavar="NAME|FILE",
                   help="compile in a cluster profile, as the cluster would run it; settings no local runner honours are refused "
                        "(see README: What runs where)")
    p.add_argument("--fail-if-not-pushed", action="store_true",
                   help=f"exit {errors.EXIT_NOT_PUSHED} when the run completes but the model is not blessed (nothing pushed)")
    docker_runner.add_arguments(p, COMPONENT_IMAGE)
    params.add_arguments(p)
    p.set_defaults(func=_run_local)

    p = sub.add_parser("demo", help="the embedded demo: digits images, a pretrained backbone, the whole pipeline")
    p.add_argument("--workdir", default=DEFAULT_DEMO_WORKDIR, metavar="DIR", help="where data, backbone, registry and run outputs go (default: %(default)s)")
    p.add_argument("--summary", metavar="FILE", help="write the run summary as JSON")
    p.add_argument("--epochs", type=int, help="override the demo's head-phase epochs (default 10)")
    p.add_argument("--fine-tune-epochs", type=int, help="override the demo's fine-tune-phase epochs (default 15; 0: head only)")
    p.set_defaults(func=_demo)

    remote_cli.add_parser(sub)
    runs_cli.add_parser(sub)
    models_cli.add_parser(sub)
    doctor.add_parser(sub, DEFAULT_PIPELINE_ROOT)

    p = sub.add_parser("predict", help="classify image files through a model's serving signature")
    p.add_argument("--model-dir", metavar="DIR", help="a serving SavedModel folder, or a finetune model output holding one as serving/")
    p.add_argument("--registry-uri", metavar="URI", help="model registry root")
    p.add_argument("--model", metavar="NAME", help="registry model name")
    p.add_argument("--version", type=int, metavar="N", help="registry version")
    p.add_argument("--alias", metavar="ENV", help="registry alias (environment)")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="image files (PNG, JPEG, GIF, BMP, WEBP, TIFF, ...); an unreadable one gets an 'error' line and exit status 1")
    p.set_defaults(func=_predict)
    for each in parsers(parser):
        each.allow_abbrev = False
    return parser


def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every sub-command parser under it, at any depth."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += parsers(child)
    return found


def version() -> str:
    """The installed ``kfp-finetune`` distribution's version (``pyproject.toml``'s ``version``).

    Raises:
        importlib.metadata.PackageNotFoundError: the project is not installed (``make test``
            and ``make demo`` install it; ``pip install -e .`` does too).
    """
    from importlib.metadata import version as distribution_version

    return distribution_version("kfp-finetune")


def _suggestion(parser: argparse.ArgumentParser, argv: list[str], unknown: list[str]) -> tuple[argparse.ArgumentParser, str]:
    """The (sub-)command's parser the unknown arguments were given to, and `` (did you mean
    --epochs?)`` for the first unknown ``--flag`` close to one of its flags (difflib's closest
    match, ratio 0.6 or more), else ``""``."""
    leaf = parser
    while True:  # down the sub-commands named in argv: kfp-finetune models list ...
        actions = [a for a in leaf._actions if isinstance(a, argparse._SubParsersAction)]
        named = next((a.choices[t] for a in actions for t in argv if t in a.choices), None)
        if named is None:
            break
        leaf = named
    options = [o for a in leaf._actions for o in a.option_strings if o.startswith("--")]
    for flag in unknown:
        if flag.startswith("--"):
            close = difflib.get_close_matches(flag.split("=", 1)[0], options, n=1)
            if close:
                return leaf, f" (did you mean {close[0]}?)"
    return leaf, ""


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code (see ``pipelines.errors``: 1 for a failed
    run, 2 for bad input, 3 for a run not pushed under ``--fail-if-not-pushed``, 130 when Ctrl-C stopped it, 141
    when the output's reader went away)."""
    # TensorFlow's C++ start-up lines (CUDA probing on a machine without a GPU, oneDNN notes)
    # bury the one line a user needs; they stay available with TF_CPP_MIN_LOG_LEVEL=0.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            leaf, hint = _suggestion(parser, list(sys.argv[1:] if argv is None else argv), unknown)
            leaf.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
        code = args.func(args)
        # Flushed here, not at exit: a reader gone by now is caught below, not by the interpreter.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return errors.quiet_broken_pipe()
    except KeyboardInterrupt as e:
        return errors.interrupted(e)


if __name__ == "__main__":
    sys.exit(main())
