"""The fine-tuning pipeline: preprocess -> finetune -> evaluate -> (if blessed) push.

``make_pipeline(image, profile)`` only wires tasks: every environment-specific value (data,
registry, accelerator) is a pipeline parameter, shown in the KFP UI's run form; the component
image and a cluster profile (``pipelines.profiles``: resources, volumes, GPU placement,
credentials, retries, timeouts, pipeline root) are chosen when compiling, and the profile is
applied to the wired tasks by ``pipelines.profile_apply``. ``PARAMETERS`` documents each
parameter for the CLI.

(No ``from __future__ import annotations`` here: KFP reads the real annotation objects.)
"""

import inspect
import os
import typing
from typing import Any, NamedTuple

from kfp import compiler, dsl

from components.image import COMPONENT_IMAGE
from components.kfp_components import build_components
from pipelines.profile_apply import apply_profile, parameter_defaults

if typing.TYPE_CHECKING:
    from pipelines.profiles import Profile

PIPELINE_NAME = "kfp-finetune"


def _parameters() -> dict[str, tuple[type, Any, str]]:
    from components.evaluate import EvaluateSettings
    from components.finetune import FinetuneSettings
    from components.preprocess import PreprocessSettings
    from components.push import PushSettings
    from components.settings import parameters

    declared = parameters([PreprocessSettings, FinetuneSettings, EvaluateSettings, PushSettings])
    return {name: (s.type, None if s.required else s.default, s.help) for name, s in declared.items()}


# name -> (type, default, help), derived from the steps' settings dataclasses (where each is
# declared once, with its check). A default of None means required. In the order the KFP UI
# and `--help` show them: the steps' order, then each settings class's field order.
PARAMETERS: dict[str, tuple[type, Any, str]] = _parameters()


def parameter_docstring(parameters: dict[str, tuple[type, Any, str]]) -> str:
    """The pipeline function's docstring: KFP reads its ``Args:`` section into the compiled
    pipeline's parameter descriptions, which the KFP UI shows in the run form."""
    lines = ["Fine-tune a pretrained Keras image model as a KFP pipeline.", "", "Args:"]
    for name, (_, _, help_text) in parameters.items():
        lines.append(f"    {name}: {help_text}")
    return "\n".join(lines) + "\n"


def parameter_table(parameters: dict[str, tuple[type, Any, str]]) -> str:
    """The README's "Pipeline parameters" table (Markdown), one row per parameter in UI order;
    a test keeps the README equal to it."""

    def shown(default: Any) -> str:
        if default is None:
            return "required"
        if isinstance(default, bool):
            return f"`{str(default).lower()}`"
        return '`""`' if default == "" else f"`{default}`"

    rows = ["| parameter | default | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | {shown(default)} | {help_text} |" for name, (_, default, help_text) in parameters.items()]
    return "\n".join(rows) + "\n"


class PipelineOutputs(NamedTuple):
    blessed: bool
    reason: str
    accuracy: float
    macro_f1: float
    pushed: str


def _with_defaults(func: typing.Callable, defaults: dict[str, Any]) -> typing.Callable:
    """Gives ``func`` other parameter defaults through its ``__signature__``, which KFP reads
    (``inspect.signature``) for the pipeline's inputs and their defaults in the run form."""
    signature = inspect.signature(func)
    unknown = set(defaults) - set(signature.parameters)
    if unknown:
        raise KeyError(f"no pipeline parameter {sorted(unknown)}")
    func.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p.replace(default=defaults.get(n, p.default)) for n, p in signature.parameters.items()]
    )
    return func


def make_pipeline(image: str = COMPONENT_IMAGE, profile: "Profile | None" = None) -> typing.Callable:
    """Builds the pipeline function with every component running in container ``image``.

    Args:
        image: Component image of every step (the profile's ``gpu_image`` replaces it for a
            finetune step given an accelerator).
        profile: Cluster settings applied to the wired tasks (``pipelines.profile_apply``);
            its ``pipeline_root`` becomes the compiled ``defaultPipelineRoot``. None: none.
    """
    c = build_components(image)

    def finetune_pipeline(
        data_uri: str,
        registry_uri: str,
        model_name: str = "image-classifier",
        target_env: str = "dev",
        image_size: int = 224,
        eval_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_salt: str = "",
        max_bad_fraction: float = 0.01,
        min_images_per_class: int = 5,
        beam_pipeline_args: str = "",
        base_model: str = "mobilenet_v2",
        base_weights: str = "imagenet",
        width_multiplier: float = 1.0,
        pooling: str = "avg",
        dense_units: str = "",
        dropout: float = 0.2,
        l1: float = 0.0,
        l2: float = 0.0,
        label_smoothing: float = 0.0,
        class_weight: str = "none",
        epochs: int = 10,
        learning_rate: float = 0.001,
        fine_tune_epochs: int = 0,
        fine_tune_learning_rate: float = 1e-05,
        unfreeze: str = "all",
        optimizer: str = "adam",
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.004,
        lr_schedule: str = "constant",
        warmup_epochs: int = 0,
        decay_rate: float = 0.9,
        clipnorm: float = 0.0,
        batch_size: int = 32,
        early_stopping_patience: int = 0,
        augmentation: str = "",
        fast_path: bool = True,
        xla: bool = False,
        mixed_precision: str = "auto",
        checkpoint_dir: str = "",
        seed: int = 0,
        accelerator_type: str = "nvidia.com/gpu",
        accelerator_count: int = 0,
        min_accuracy: float = 0.5,
        champion_tolerance: float = 0.0,
        allow_label_change: bool = False,
    ) -> PipelineOutputs:
        pre = c.preprocess(
            data_uri=data_uri, registry_uri=registry_uri, model_name=model_name, target_env=target_env,
            image_size=image_size, eval_fraction=eval_fraction, test_fraction=test_fraction, split_salt=split_salt,
            max_bad_fraction=max_bad_fraction, min_images_per_class=min_images_per_class,
            beam_pipeline_args=beam_pipeline_args, base_model=base_model,
        ).set_display_name("preprocess")
        # data_uri names a place, not content: a scheduled run finds new images under the same
        # URI, so a cache hit keyed on the URI would silently retrain on yesterday's data.
        pre.set_caching_options(False)
        # A remote Beam runner starts its SDK workers from this image (components.beam_options).
        pre.set_env_variable("KFP_FINETUNE_COMPONENT_IMAGE", image)
        train = c.finetune(
            examples=pre.outputs["examples"], transform_graph=pre.outputs["transform_graph"],
            base_model=base_model, base_weights=base_weights, width_multiplier=width_multiplier,
            pooling=pooling, dense_units=dense_units, dropout=dropout, l1=l1, l2=l2,
            label_smoothing=label_smoothing, class_weight=class_weight, epochs=epochs,
            learning_rate=learning_rate, fine_tune_epochs=fine_tune_epochs,
            fine_tune_learning_rate=fine_tune_learning_rate, unfreeze=unfreeze, optimizer=optimizer,
            momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs, decay_rate=decay_rate, clipnorm=clipnorm, batch_size=batch_size,
            early_stopping_patience=early_stopping_patience, augmentation=augmentation,
            fast_path=fast_path, xla=xla, mixed_precision=mixed_precision,
            checkpoint_dir=checkpoint_dir, seed=seed, requested_accelerator_type=accelerator_type,
            requested_accelerator_count=accelerator_count,
        ).set_display_name("finetune")
        train.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
        ev = c.evaluate(
            examples=pre.outputs["examples"], model=train.outputs["model"], registry_uri=registry_uri,
            model_name=model_name, target_env=target_env, min_accuracy=min_accuracy,
            champion_tolerance=champion_tolerance, allow_label_change=allow_label_change,
        ).set_display_name("evaluate")
        # The champion can change between runs with identical inputs: never reuse a cached score.
        ev.set_caching_options(False)
        with dsl.If(ev.outputs["blessed"] == True, name="blessed"):  # noqa: E712 (KFP condition)
            pushed = c.push(
                model=train.outputs["model"], evaluation=ev.outputs["evaluation"],
                statistics=pre.outputs["statistics"], registry_uri=registry_uri,
                model_name=model_name, target_env=target_env, data_uri=data_uri,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ).set_display_name("push")
            # A push writes to the registry: it must run every time, never come from the cache.
            pushed.set_caching_options(False)
        with dsl.Else(name="not-blessed"):
            skipped = c.skip_push(reason=ev.outputs["reason"]).set_display_name("not pushed")
            skipped.set_caching_options(False)
        if profile is not None:
            apply_profile({"preprocess": pre, "finetune": train, "evaluate": ev, "push": pushed, "skip_push": skipped}, profile)
        return PipelineOutputs(
            blessed=ev.outputs["blessed"], reason=ev.outputs["reason"],
            accuracy=ev.outputs["accuracy"], macro_f1=ev.outputs["macro_f1"],
            pushed=dsl.OneOf(pushed.output, skipped.output),
        )

    # The docstring is made from PARAMETERS before KFP reads it (its Args become the run form's
    # descriptions); hence the decorator applied by hand.
    finetune_pipeline.__doc__ = parameter_docstring(PARAMETERS)
    if profile is not None:
        _with_defaults(finetune_pipeline, parameter_defaults(profile))
    return dsl.pipeline(
        name=PIPELINE_NAME,
        description="Fine-tune a pretrained Keras image model: preprocess (tf.Transform), "
        "fine-tune, evaluate against the champion, push to the registry if blessed.",
        pipeline_root=profile.pipeline_root if profile is not None else None,
    )(finetune_pipeline)


finetune_pipeline = make_pipeline()


def compile_pipeline(package_path: str, image: typing.Optional[str] = None, profile: "Profile | None" = None) -> str:
    """Writes the compiled pipeline (KFP IR YAML) to ``package_path`` and returns the path.

    Args:
        package_path: Output file (``.yaml``); parent folders are created.
        image: Component image reference; default the profile's ``image``, else
            ``components.image.COMPONENT_IMAGE``.
        profile: A cluster profile (``pipelines.profiles.load_profile``) to compile in: its
            settings land in ``deploymentSpec`` and the ``platforms.kubernetes`` section.

    Raises:
        ValueError: ``image`` is not an image reference (``components.image.check_reference``).
    """
    from components.image import check_reference

    if image:
        check_reference(image)
    os.makedirs(os.path.dirname(os.path.abspath(package_path)), exist_ok=True)
    image = image or (profile.image if profile is not None else None)
    pipeline = make_pipeline(image or COMPONENT_IMAGE, profile) if image or profile is not None else finetune_pipeline
    compiler.Compiler().compile(pipeline, package_path=package_path)
    return package_path
