"""A backbone that carries its own settings: the sidecar file next to a ``.weights.h5``.

A ``.weights.h5`` file holds arrays, not the architecture that reads them: MobileNetV2 at width
0.35 and at width 1.0 are different files, and nothing in the file says which. Whoever writes a
backbone (the demo's ``pretrain_backbone``, any future "save backbone" path) also writes
``<name>.weights.json`` beside ``<name>.weights.h5``::

    {"base_model": "mobilenet_v2", "width_multiplier": 0.35, "image_size": 48,
     "classes": ["0", "1", "2", "3", "4"], "source": "pretrained on ... (eval accuracy 0.95)"}

``run-local --base-weights FILE`` reads it (``read_card``) and fills the pipeline parameters
``base_model``, ``width_multiplier`` and ``image_size`` that the command line does not give
(``apply_card``). A given ``base_model`` or ``width_multiplier`` that differs from the card is
refused before anything runs: the file's arrays would not fit. A different ``image_size`` is
allowed (a convolutional backbone's weights do not depend on the input size) and named.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

#: The pipeline parameters a card fills, in the order they are reported.
SETTINGS = ("base_model", "width_multiplier", "image_size")
_WEIGHTS_SUFFIX = ".h5"


@dataclasses.dataclass(frozen=True)
class BackboneCard:
    """What a backbone file was made as.

    Attributes:
        base_model: A ``components.base_models.BASE_MODELS`` name, e.g. ``mobilenet_v2``.
        width_multiplier: MobileNet ``alpha`` (1.0 for families without one), > 0.
        image_size: Input height and width in pixels it was trained at (at least the base
            model's minimum).
        classes: The classes of the task it was trained on (informational), in label order.
        source: One line on how it was made (data, epochs, accuracy).
    """

    base_model: str
    width_multiplier: float
    image_size: int
    classes: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        from components import base_models

        spec = base_models.get_spec(self.base_model)
        if isinstance(self.width_multiplier, bool) or not isinstance(self.width_multiplier, (int, float)) \
                or self.width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be a number > 0, got {self.width_multiplier!r}")
        if not spec.has_width_multiplier and self.width_multiplier != 1.0:
            raise ValueError(f"width_multiplier {self.width_multiplier} given for {self.base_model!r}, which has none (use 1.0)")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int):
            raise ValueError(f"image_size must be an integer, got {self.image_size!r}")
        base_models.check_image_size(self.base_model, self.image_size)

    def settings(self) -> dict[str, Any]:
        """The pipeline parameters it fills: ``{name: value}`` for each of ``SETTINGS``."""
        return {name: getattr(self, name) for name in SETTINGS}


def card_path(weights_path: str) -> str:
    """``x.weights.h5`` -> ``x.weights.json`` (any ``.h5`` file: the same name, ``.json``)."""
    stem = weights_path[: -len(_WEIGHTS_SUFFIX)] if weights_path.endswith(_WEIGHTS_SUFFIX) else weights_path
    return stem + ".json"


def write_card(weights_path: str, card: BackboneCard) -> str:
    """Writes ``card`` next to ``weights_path`` (atomically); returns the sidecar's path."""
    path = card_path(weights_path)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({**dataclasses.asdict(card), "classes": list(card.classes)}, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_card(weights_path: str) -> BackboneCard | None:
    """The card beside a local weights file, or None when there is none.

    Raises:
        ValueError: the sidecar is not JSON, lacks a setting, has an unknown key or a value
            that is not allowed; the message names the file and the field.
    """
    path = card_path(weights_path)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"backbone sidecar {path!r} is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"backbone sidecar {path!r} must hold a JSON object, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(BackboneCard)}
    missing, unknown = [s for s in SETTINGS if s not in raw], sorted(set(raw) - known)
    if missing or unknown:
        raise ValueError(f"backbone sidecar {path!r}: " + "; ".join(
            ([f"missing {missing}"] if missing else []) + ([f"unknown keys {unknown} (known: {sorted(known)})"] if unknown else [])))
    try:
        return BackboneCard(**{**raw, "classes": tuple(raw.get("classes", ()))})
    except ValueError as e:
        raise ValueError(f"backbone sidecar {path!r}: {e}") from None


def apply_card(params: Mapping[str, Any], card: BackboneCard, card_file: str) -> tuple[dict[str, Any], list[str]]:
    """Fills the settings ``params`` leaves out from ``card``, and checks those it gives.

    Args:
        params: Pipeline parameters as given (snake_case names; a name absent = not given).
        card: The backbone's card.
        card_file: Its path, for the messages.

    Returns:
        ``(params with the missing settings filled, notes)``: one note per filled setting and
        per allowed difference (``image_size``).

    Raises:
        ValueError: a given ``base_model`` or ``width_multiplier`` differs from the card's (the
            weights would not fit); names the flag, both values and the sidecar.
    """
    filled, notes, conflicts = dict(params), [], []
    for name, value in card.settings().items():
        flag = "--" + name.replace("_", "-")
        if name not in params:
            filled[name] = value
            notes.append(f"{name} {value!r} from {card_file}")
        elif params[name] != value and name == "image_size":
            notes.append(f"image_size {params[name]} given; the backbone was trained at {value} px ({card_file}): "
                         "its weights fit any input size")
        elif params[name] != value and not (isinstance(value, float) and float(params[name]) == value):
            conflicts.append(f"{flag} {params[name]!r} conflicts with {name} {value!r} in {card_file}")
    if conflicts:
        raise ValueError("; ".join(conflicts) + ": the weights file would not fit; leave the flag out to use the "
                         "backbone's own setting, or correct the sidecar")
    return filled, notes
