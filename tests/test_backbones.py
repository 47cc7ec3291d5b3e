"""A backbone that carries its own settings: the sidecar the demo writes beside its weights,
``run-local --base-weights`` filling the settings from it (or refusing a conflict), and a weights
file that does not fit the requested base model naming the setting that fits."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from components import backbones
from components.backbones import BackboneCard


def test_the_demo_backbone_writes_its_settings_beside_its_weights(backbone_weights):
    weights, scores = backbone_weights
    assert backbones.card_path(weights) == weights[: -len(".h5")] + ".json"
    card = backbones.read_card(weights)
    assert card.settings() == {"base_model": "mobilenet_v2", "width_multiplier": 0.35, "image_size": 48}
    assert card.classes == ("0", "1", "2", "3", "4")
    assert f"eval accuracy {scores['eval_accuracy']:.3f}" in card.source


@pytest.mark.parametrize("given, filled, notes", [
    ({}, {"base_model": "mobilenet_v2", "width_multiplier": 0.35, "image_size": 48}, 3),
    ({"base_model": "mobilenet_v2", "width_multiplier": 0.35}, {"base_model": "mobilenet_v2", "width_multiplier": 0.35,
                                                               "image_size": 48}, 1),
    ({"image_size": 96}, {"base_model": "mobilenet_v2", "width_multiplier": 0.35, "image_size": 96}, 3),
])
def test_settings_left_out_are_filled_and_a_new_input_size_is_allowed(given, filled, notes):
    card = BackboneCard("mobilenet_v2", 0.35, 48)
    params, said = backbones.apply_card({"data_uri": "/d", **given}, card, "b.weights.json")
    assert params == {"data_uri": "/d", **filled} and len(said) == notes
    if "image_size" in given:
        assert "image_size 96 given; the backbone was trained at 48 px (b.weights.json)" in said[-1]


@pytest.mark.parametrize("given, named", [
    ({"width_multiplier": 1.0}, "--width-multiplier 1.0 conflicts with width_multiplier 0.35 in b.weights.json"),
    ({"base_model": "resnet50"}, "--base-model 'resnet50' conflicts with base_model 'mobilenet_v2' in b.weights.json"),
])
def test_a_given_setting_the_weights_cannot_fit_is_refused_by_name(given, named):
    with pytest.raises(ValueError, match="the weights file would not fit") as raised:
        backbones.apply_card(given, BackboneCard("mobilenet_v2", 0.35, 48), "b.weights.json")
    assert named in str(raised.value)


@pytest.mark.parametrize("content, message", [
    ("not json", "is not JSON"),
    (json.dumps({"base_model": "mobilenet_v2", "image_size": 48}), r"missing \['width_multiplier'\]"),
    (json.dumps({"base_model": "mobilenet_v9", "width_multiplier": 1.0, "image_size": 48}), "base_model 'mobilenet_v9' is not supported"),
    (json.dumps({"base_model": "resnet50", "width_multiplier": 0.5, "image_size": 48}), "has none"),
    (json.dumps({"base_model": "mobilenet_v2", "width_multiplier": 1.0, "image_size": 48, "alpha": 1}), r"unknown keys \['alpha'\]"),
])
def test_a_broken_sidecar_is_refused_naming_the_file_and_field(tmp_path, content, message):
    weights = tmp_path / "b.weights.h5"
    (tmp_path / "b.weights.json").write_text(content)
    with pytest.raises(ValueError, match=message) as raised:
        backbones.read_card(str(weights))
    assert str(tmp_path / "b.weights.json") in str(raised.value)
    assert backbones.read_card(str(tmp_path / "other.weights.h5")) is None


def test_run_local_fills_the_settings_from_the_sidecar_and_names_a_conflict(backbone_weights, tmp_path, monkeypatch, capsys):
    from pipelines import local
    from pipelines.cli import main

    calls = []
    monkeypatch.setattr(local, "run_local", lambda params, root, package_path=None, docker=None, profile=None: calls.append(params) or
                        local.LocalRunResult("succeeded", True, "ok", 0.9, 0.9, None, root, None, 0.0))
    weights = backbone_weights[0]
    # Data the up-front check accepts (a class folder with a file), beside the pipeline root.
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "cat" / "a.png").write_bytes(b"png")
    base = ["run-local", "--data-uri", str(tmp_path / "data"), "--registry-uri", str(tmp_path / "reg"),
            "--pipeline-root", str(tmp_path / "root"), "--base-weights", weights]
    assert main(base) == 0
    assert {k: calls[-1][k] for k in backbones.SETTINGS} == {"base_model": "mobilenet_v2", "width_multiplier": 0.35, "image_size": 48}
    assert f"backbone: width_multiplier 0.35 from {backbones.card_path(weights)}" in capsys.readouterr().out
    assert main(base + ["--width-multiplier", "1.0"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --width-multiplier 1.0 conflicts with width_multiplier 0.35 in {backbones.card_path(weights)}: the weights "
        "file would not fit; leave the flag out to use the backbone's own setting, or correct the sidecar")
    assert len(calls) == 1


def test_weights_that_do_not_fit_name_the_width_that_does(backbone_weights, tmp_path):
    """The demo's file without its sidecar, loaded as MobileNetV2 at the default width 1.0."""
    from components.finetune import FinetuneSettings
    from components.finetune.model import load_base_model

    bare = str(tmp_path / "bare.weights.h5")
    shutil.copyfile(backbone_weights[0], bare)
    settings = FinetuneSettings(base_model="mobilenet_v2", base_weights=bare, width_multiplier=1.0)
    with pytest.raises(ValueError, match=r"does not fit layer .*; the file fits base_model 'mobilenet_v2' with "
                                         r"width_multiplier 0.35: set those \(--base-model mobilenet_v2 --width-multiplier 0.35\)"):
        load_base_model(settings, 48, str(tmp_path))
    assert not os.path.exists(backbones.card_path(bare))
