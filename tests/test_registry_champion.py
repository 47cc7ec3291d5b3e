"""registry.champion: the version an environment alias points at, with its labels, on a local folder
and on the GCS emulator; a registry that cannot be read is an error, never "no champion"."""

from __future__ import annotations

import pytest

from components import registry
from gcs_emulator import gcs_emulator, gcs_registry_uri  # noqa: F401 - pytest fixtures
from test_registry import METADATA, make_source, write_raw

LABELS = ["5", "6", "7", "8", "9"]
WITH_LABELS = {**METADATA, "labels": LABELS}


def nothing(model_registry, source):
    """No push: a local registry folder that does not exist, an empty GCS prefix."""


def other_model(model_registry, source):
    model_registry.push("flowers", source, WITH_LABELS, alias="prod")


def no_alias(model_registry, source):
    model_registry.push("digits", source, WITH_LABELS, alias="dev")


def prod_is_1(model_registry, source):
    model_registry.push("digits", source, WITH_LABELS, alias="prod")  # 1
    model_registry.push("digits", source, {**WITH_LABELS, "labels": ["0", "1"]}, alias="dev")  # 2


def rolled_back_to_1(model_registry, source):
    prod_is_1(model_registry, source)
    model_registry.set_alias("digits", "prod", 2)
    model_registry.rollback("digits", "prod")


def no_labels(model_registry, source):
    model_registry.push("digits", source, METADATA, alias="prod")


def damaged_metadata(model_registry, source):
    model_registry.push("digits", source, WITH_LABELS, alias="prod")
    write_raw(model_registry, "digits/1/metadata.json", b'{"labels": ["5", ')


def damaged_alias(model_registry, source):
    model_registry.push("digits", source, WITH_LABELS, alias="prod")
    write_raw(model_registry, "digits/aliases/prod.json", b'{"version": "one"}')


def labels_not_a_list(model_registry, source):
    model_registry.push("digits", source, {**METADATA, "labels": "56789"}, alias="prod")


# (state, model, alias, expected: the champion, None, or (error class, message pattern))
CASES = [
    pytest.param(nothing, "digits", "prod", None, id="no-registry"),
    pytest.param(other_model, "digits", "prod", None, id="no-model"),
    pytest.param(no_alias, "digits", "prod", None, id="model-without-alias"),
    pytest.param(prod_is_1, "digits", "prod", {"version": 1, "alias": "prod", "labels": LABELS}, id="alias-set"),
    pytest.param(prod_is_1, "digits", "dev", {"version": 2, "alias": "dev", "labels": ["0", "1"]}, id="other-alias"),
    pytest.param(rolled_back_to_1, "digits", "prod", {"version": 1, "alias": "prod", "labels": LABELS},
                 id="after-rollback"),
    pytest.param(no_labels, "digits", "prod", {"version": 1, "alias": "prod", "labels": []}, id="no-labels"),
    pytest.param(prod_is_1, "", "prod", None, id="empty-model"),
    pytest.param(prod_is_1, "digits", "", None, id="empty-alias"),
    pytest.param(damaged_metadata, "digits", "prod",
                 (registry.CorruptMetadataError,
                  r"metadata of model 'digits' version 1 is not valid JSON: .*metadata\.json"),
                 id="damaged-metadata"),
    pytest.param(damaged_alias, "digits", "prod",
                 (registry.CorruptMetadataError, r"alias 'prod' of model 'digits' is not an object .*prod\.json"),
                 id="damaged-alias"),
    pytest.param(labels_not_a_list, "digits", "prod",
                 (registry.CorruptMetadataError,
                  r"metadata of model 'digits' version 1: 'labels' is not a list of strings \(got '56789'\): "
                  r".*/digits/1/metadata\.json"),
                 id="labels-not-a-list"),
]


@pytest.fixture(params=["local", "gcs"])
def registry_uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "registry")
    return request.getfixturevalue("gcs_registry_uri")


@pytest.mark.parametrize(("state", "model", "alias", "expected"), CASES)
def test_champion(registry_uri, tmp_path, state, model, alias, expected):
    state(registry.open_registry(registry_uri), make_source(tmp_path / "export"))
    if isinstance(expected, tuple):
        error, pattern = expected
        with pytest.raises(error, match=pattern):
            registry.champion(registry_uri, model, alias)
    else:
        assert registry.champion(registry_uri, model, alias) == expected


def test_champion_without_a_registry_uri_is_none():
    assert registry.champion("", "digits", "prod") is None


def test_champion_on_a_missing_bucket_is_a_registry_error(gcs_emulator):
    missing = "gs://no-such-bucket-kfp/r"
    with pytest.raises(registry.RegistryError, match=f"bucket 'no-such-bucket-kfp' of registry {missing}"):
        registry.champion(missing, "digits", "prod")


def test_champion_refuses_a_bad_uri_and_alias(tmp_path):
    with pytest.raises(ValueError, match="invalid registry URI 's3://b/r'"):
        registry.champion("s3://b/r", "digits", "prod")
    model_registry = registry.open_registry(str(tmp_path / "registry"))
    model_registry.push("digits", make_source(tmp_path / "export"), WITH_LABELS, alias="prod")
    with pytest.raises(ValueError, match=r"invalid alias '\.\./prod'"):
        registry.champion(str(tmp_path / "registry"), "digits", "../prod")
