"""Shared fixtures: real digits images and a real pretrained backbone, made once per session."""

import os

import pytest

# Quiet TensorFlow's C++ start-up chatter in test logs (read by TF at import, set before it).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Test-sized backbone: fewer pretraining epochs than the demo's 30 (measured: about 0.9 eval
# accuracy on digits 0-4 after 10 epochs, enough for transfer to beat a random base).
BACKBONE_EPOCHS = 10


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """Digits 5-9 from scikit-learn as PNG files in class folders (about 180 per class)."""
    from pipelines.demo import TARGET_DIGITS, write_digit_images

    root = str(tmp_path_factory.mktemp("digits") / "digits-5-9")
    write_digit_images(root, TARGET_DIGITS)
    return root


@pytest.fixture(scope="session")
def small_digits_dir(tmp_path_factory):
    """Digits 5-9, 40 images per class: for unit tests of the steps."""
    from pipelines.demo import TARGET_DIGITS, write_digit_images

    root = str(tmp_path_factory.mktemp("small-digits") / "digits")
    write_digit_images(root, TARGET_DIGITS, limit_per_class=40)
    return root


@pytest.fixture(scope="session")
def backbone_weights(tmp_path_factory):
    """A MobileNetV2 (width 0.35, 32 px) base pretrained on digits 0-4: (weights path, accuracies)."""
    from pipelines.demo import SOURCE_DIGITS, pretrain_backbone, write_digit_images

    root = tmp_path_factory.mktemp("backbone")
    source = str(root / "digits-0-4")
    write_digit_images(source, SOURCE_DIGITS)
    weights = str(root / "backbone.weights.h5")
    scores = pretrain_backbone(source, weights, epochs=BACKBONE_EPOCHS)
    return weights, scores


@pytest.fixture(scope="session")
def preprocessed(tmp_path_factory, small_digits_dir):
    """The preprocess component's real outputs on ``small_digits_dir`` at 32 px for MobileNetV2,
    made by the component body itself (``.python_func``, as KFP runs it): the folders of its
    ``examples``, ``transform_graph`` and ``statistics`` artifacts, and the statistics."""
    import json

    from kfp.dsl import Artifact, Dataset, Markdown

    from components.artifacts import STATISTICS_FILE
    from components.kfp_components import build_components

    root = tmp_path_factory.mktemp("preprocessed")
    examples, transform, statistics = Dataset(uri=str(root / "examples")), Artifact(uri=str(root / "transform")), Artifact(uri=str(root / "statistics"))
    build_components().preprocess.python_func(
        data_uri=small_digits_dir, registry_uri="", model_name="digits", target_env="dev", image_size=32,
        eval_fraction=0.15, test_fraction=0.15, split_salt="", max_bad_fraction=0.01, min_images_per_class=5,
        beam_pipeline_args="", base_model="mobilenet_v2", examples=examples, transform_graph=transform,
        statistics=statistics, statistics_report=Markdown(uri=str(root / "statistics.md")),
    )
    with open(root / "statistics" / STATISTICS_FILE) as f:
        stats = json.load(f)
    return {"examples": examples.path, "transform": transform.path, "statistics": statistics.path, "stats": stats,
            "examples_metadata": dict(examples.metadata), "report": str(root / "statistics.md")}


@pytest.fixture(scope="session")
def finetune_component_run(preprocessed, backbone_weights, tmp_path_factory):
    """The finetune component body (``.python_func``, as KFP runs it) on ``preprocessed``: a
    head-only run of 4 epochs on the test backbone. Returns the model folder, the training
    summary (``training.json``), the logged metrics and the report artifacts' paths (Markdown,
    HTML).

    The learning rate is 1e-2: with 3e-3 the loss fell only 9% in 4 epochs in a fresh
    environment (keras 3.15.1), too close to what ``test_finetune_trains_the_head_and_loss_falls``
    asks (10%); with 1e-2 it fell 20% (1.848 -> 1.486)."""
    import json

    from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model

    from components.artifacts import TRAINING_FILE
    from components.finetune import FinetuneSettings
    from components.kfp_components import RENAMED_INPUTS, build_components
    from components.settings import declared

    root = tmp_path_factory.mktemp("finetune-component")
    params = {name: spec.default for name, spec in declared(FinetuneSettings).items()}
    params.update(base_model="mobilenet_v2", base_weights=backbone_weights[0], width_multiplier=0.35, epochs=4, learning_rate=1e-2)
    params = {RENAMED_INPUTS.get(k, k): v for k, v in params.items()}
    model, metrics, report = Model(uri=str(root / "model")), Metrics(uri=str(root / "metrics")), Markdown(uri=str(root / "training.md"))
    html = HTML(uri=str(root / "training.html"))
    build_components().finetune.python_func(
        examples=Dataset(uri=preprocessed["examples"]), transform_graph=Artifact(uri=preprocessed["transform"]),
        model=model, training_metrics=metrics, training_report=report, training_html=html, **params,
    )
    with open(root / "model" / TRAINING_FILE) as f:
        summary = json.load(f)
    return {"model_dir": model.path, "summary": summary, "metrics": dict(metrics.metadata),
            "model_metadata": dict(model.metadata), "report": report.path, "html": html.path}


@pytest.fixture(scope="session")
def trained_model(finetune_component_run):
    """The finetune step's real output on ``preprocessed``: (model folder, training summary)."""
    return finetune_component_run["model_dir"], finetune_component_run["summary"]


# --- the reliability catalogue (make reliability) -------------------------------------------------
# Categories of @pytest.mark.reliability("<category>") cases; another is refused at collection.
RELIABILITY_CATEGORIES = ("data", "parameters", "registry", "cli", "faults", "security")


@pytest.hookimpl(trylast=True)  # after -m / -k have deselected: count what runs
def pytest_collection_modifyitems(config, items):
    counts = {c: 0 for c in RELIABILITY_CATEGORIES}
    for item in items:
        mark = item.get_closest_marker("reliability")
        if mark is None:
            continue
        category = mark.args[0] if mark.args else None
        if category not in counts:
            raise pytest.UsageError(f"{item.nodeid}: reliability category {category!r} is not one of {', '.join(RELIABILITY_CATEGORIES)}")
        counts[category] += 1
    config._reliability_counts = counts


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts = getattr(config, "_reliability_counts", None)
    if not counts or not sum(counts.values()):
        return
    failed = [r for r in terminalreporter.stats.get("failed", []) if "reliability" in r.keywords]
    terminalreporter.write_sep("-", "reliability catalogue")
    terminalreporter.write_line(", ".join(f"{c} {n}" for c, n in counts.items()) + f"; total {sum(counts.values())}, failed {len(failed)}")
