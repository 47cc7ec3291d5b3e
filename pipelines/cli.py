"""The ``kfp-finetune`` command line (also ``python -m pipelines``).

Commands: compile, run-local, demo, submit, schedule, models (list/describe/promote/rollback),
predict. Errors print one ``error: ...`` line on stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Sequence

from pipelines import models_cli, remote

DEFAULT_PIPELINE_ROOT = "kfp-local-root"
DEFAULT_DEMO_WORKDIR = "demo-work"


def _add_pipeline_params(parser: argparse.ArgumentParser) -> None:
    from pipelines.pipeline import PARAMETERS

    group = parser.add_argument_group("pipeline parameters (override --config)")
    for name, (kind, default, help_text) in PARAMETERS.items():
        shown = "required" if default is None else f"default: {default!r}"
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"param_{name}", type=_parse_bool if kind is bool else kind,
                           default=None, metavar=kind.__name__.upper(), help=f"{help_text} ({shown})")


def _parse_bool(text: str) -> bool:
    # argparse's type=bool would take any non-empty string, "false" included, as True.
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _collect_params(args: argparse.Namespace) -> dict[str, Any]:
    params = remote.load_params(args.config, None)
    params.update({k[len("param_"):]: v for k, v in vars(args).items() if k.startswith("param_") and v is not None})
    return params


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
    else:
        print("pushed: nothing")
    print(f"run outputs: {summary['run_dir']}")


def _compile(args: argparse.Namespace) -> int:
    from pipelines.pipeline import compile_pipeline

    image = args.image or os.environ.get("KFP_FINETUNE_IMAGE") or None
    print(compile_pipeline(args.output, image=image))
    return 0


def _run_local(args: argparse.Namespace) -> int:
    from pipelines.local import PipelineRunError, check_settings, run_local
    from pipelines.pipeline import compile_pipeline

    with tempfile.TemporaryDirectory(prefix="kfp-finetune-") as tmp:
        package = args.package or compile_pipeline(os.path.join(tmp, "pipeline.yaml"))
        params = remote.check_params(remote.read_pipeline_package(package), _collect_params(args))
        check_settings(params)
        try:
            result = run_local(params, args.pipeline_root, package_path=package)
        except PipelineRunError as e:
            _write_summary(args.summary, {"status": "failed", "error": str(e), "metrics": None, "blessed": None, "pushed": None,
                                          "pipeline_root": e.pipeline_root, "run_dir": e.run_dir})
            raise
    summary = result.summary()
    _print_result(summary)
    _write_summary(args.summary, summary)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pipelines import demo
    from pipelines.local import PipelineRunError

    overrides = {k: v for k, v in {"epochs": args.epochs, "fine_tune_epochs": args.fine_tune_epochs}.items() if v is not None}
    try:
        summary = demo.run_demo(args.workdir, overrides)
    except PipelineRunError as e:
        _write_summary(args.summary, {"status": "failed", "error": str(e), "metrics": None, "blessed": None, "pushed": None,
                                      "pipeline_root": e.pipeline_root, "run_dir": e.run_dir})
        raise
    _print_result(summary)
    print(f"data: {summary['data_uri']}\nbackbone weights: {summary['base_weights']}\nregistry: {summary['registry_uri']}")
    print("registry entry:\n" + demo.describe_pushed(summary))
    _write_summary(args.summary, summary)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pipelines.predict import predict

    failed = 0
    for row in predict(args.files, args.model_dir, args.registry_uri, args.model, args.version, args.alias):
        print(json.dumps(row))
        failed += "error" in row
    if failed:
        print(f"error: {failed} of {len(args.files)} file(s) could not be classified (see their 'error')", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (each sets ``func(args) -> exit code``)."""
    from components.image import COMPONENT_IMAGE

    parser = argparse.ArgumentParser(
        prog="kfp-finetune",
        description="Fine-tune pretrained Keras image models as a Kubeflow Pipelines workflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("compile", help="write the compiled pipeline (KFP IR YAML)")
    p.add_argument("-o", "--output", default="kfp-finetune.yaml", metavar="FILE", help="output file (default: %(default)s)")
    p.add_argument("--image", metavar="REF", help=f"component image (default: $KFP_FINETUNE_IMAGE or {COMPONENT_IMAGE})")
    p.set_defaults(func=_compile)

    p = sub.add_parser("run-local", help="run the whole pipeline on this machine with kfp.local")
    p.add_argument("--config", metavar="FILE", help="YAML mapping of pipeline parameters (snake_case or kebab-case keys)")
    p.add_argument("--pipeline-root", default=DEFAULT_PIPELINE_ROOT, metavar="DIR", help="local folder for run artifacts (default: %(default)s)")
    p.add_argument("--package", metavar="FILE", help="a compiled pipeline YAML to run (default: compile the installed pipeline)")
    p.add_argument("--summary", metavar="FILE", help="write the run summary as JSON")
    _add_pipeline_params(p)
    p.set_defaults(func=_run_local)

    p = sub.add_parser("demo", help="the embedded demo: digits images, a pretrained backbone, the whole pipeline")
    p.add_argument("--workdir", default=DEFAULT_DEMO_WORKDIR, metavar="DIR", help="where data, backbone, registry and run outputs go (default: %(default)s)")
    p.add_argument("--summary", metavar="FILE", help="write the run summary as JSON")
    p.add_argument("--epochs", type=int, help="override the demo's head-phase epochs (default 10)")
    p.add_argument("--fine-tune-epochs", type=int, help="override the demo's fine-tune-phase epochs (default 15; 0: head only)")
    p.set_defaults(func=_demo)

    remote.add_parser(sub)
    models_cli.add_parser(sub)

    p = sub.add_parser("predict", help="classify image files through a model's serving signature")
    p.add_argument("--model-dir", metavar="DIR", help="a serving SavedModel folder, or a finetune model output holding one as serving/")
    p.add_argument("--registry-uri", metavar="URI", help="model registry root")
    p.add_argument("--model", metavar="NAME", help="registry model name")
    p.add_argument("--version", type=int, metavar="N", help="registry version")
    p.add_argument("--alias", metavar="ENV", help="registry alias (environment)")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="image files (PNG, JPEG, GIF, BMP, WEBP, TIFF, ...); an unreadable one gets an 'error' line and exit status 1")
    p.set_defaults(func=_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code (1 for a failed run, 2 for bad input)."""
    from components.registry import RegistryError
    from pipelines.local import PipelineRunError

    # TensorFlow's C++ start-up lines (CUDA probing on a machine without a GPU, oneDNN notes)
    # bury the one line a user needs; they stay available with TF_CPP_MIN_LOG_LEVEL=0.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PipelineRunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, RegistryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
