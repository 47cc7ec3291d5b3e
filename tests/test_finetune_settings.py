"""The finetune step's pure decisions on its settings (components.finetune.settings)."""

import pytest

from components.finetune import FinetuneSettings
from components.finetune.settings import fast_path_applies, is_pretrained, parse_unfreeze


@pytest.mark.parametrize(
    "fast_path, augmentation, epochs, expected",
    [
        (True, (), 3, True),
        (False, (), 3, False),  # switched off
        (True, ("flip",), 3, False),  # random layers before the base: its outputs change each epoch
        (True, (), 0, False),  # no head phase
    ],
)
def test_fast_path_applies_table(fast_path, augmentation, epochs, expected):
    settings = FinetuneSettings(base_weights="none", fast_path=fast_path, augmentation=augmentation, epochs=epochs, fine_tune_epochs=1)
    assert fast_path_applies(settings) is expected


@pytest.mark.parametrize(
    "base_weights, expected",
    [("imagenet", True), ("none", False), ("None", False), ("/models/backbone.weights.h5", True), ("gs://b/m.keras", True)],
)
def test_is_pretrained_table(base_weights, expected):
    assert is_pretrained(FinetuneSettings(base_weights=base_weights)) is expected


@pytest.mark.parametrize(
    "spec, expected",
    [("all", ("all", None)), ("top:1", ("top", 1)), ("top:20", ("top", 20)), ("from:block_16_expand", ("from", "block_16_expand"))],
)
def test_parse_unfreeze_table(spec, expected):
    assert parse_unfreeze(spec) == expected


@pytest.mark.parametrize("spec", ["", "top", "top:", "top:-1", "top:x", "from:", "bottom:3", "ALL"])
def test_parse_unfreeze_refuses_other_forms(spec):
    with pytest.raises(ValueError, match=r"must be 'all', 'top:N' \(N >= 1\) or 'from:LAYER_NAME'"):
        parse_unfreeze(spec)


def test_unfreeze_is_checked_when_the_settings_are_made():
    with pytest.raises(ValueError, match="unfreeze 'top:0' must be"):
        FinetuneSettings(unfreeze="top:0")
