"""The promotion policy: the pure check_promotion table, Registry.promote on both storages, the
environment order in registry.json, and ``models promote --force --reason`` / ``models env-order``."""

from __future__ import annotations

import json

import pytest

from components.registry import (
    CorruptMetadataError,
    PromotionRefusedError,
    RegistryConfigError,
    check_promotion,
    open_registry,
    parse_env_order,
    validate_env_order,
)
from components.registry.policy import environments_of_version, rollback_target
from gcs_emulator import gcs_emulator, gcs_registry_uri  # noqa: F401 - pytest fixtures
from test_models_cli import run
from test_registry import METADATA, make_source, write_raw

BLESSED = {**METADATA, "blessing": {"blessed": True, "reason": "accuracy 0.96 >= floor 0.5"}}
NOT_BLESSED = {**METADATA, "blessing": {"blessed": False, "reason": "accuracy 0.41 < floor 0.5"}}
ORDER = ("dev", "staging", "prod")
NEVER_STAGING = "version 3 was never in 'staging' (environment order: dev -> staging -> prod); promote it there first"
NO_BLESSING = "version 3 has no blessing in its metadata (counts as not blessed)"
NOT_BLESSED_MSG = "version 3 was not blessed (accuracy 0.41 < floor 0.5)"
NOT_IN_ORDER = "'prdo' is not in the environment order (dev -> staging -> prod); add it with 'kfp-finetune models env-order --set ...'"

# (metadata, target_env, environments the version has been in, env order, force, reason,
#  expected overridden list, or the expected refusal's violations)
CASES = [
    # allowed without force
    (BLESSED, "dev", set(), ORDER, False, None, [], None),
    (BLESSED, "staging", {"dev"}, ORDER, False, None, [], None),
    (BLESSED, "prod", {"staging"}, ORDER, False, None, [], None),
    (BLESSED, "prod", {"dev", "staging"}, ORDER, False, "routine", [], None),
    (BLESSED, "prod", {"dev"}, ("dev", "prod"), False, None, [], None),  # custom order
    (BLESSED, "staging", set(), ("staging", "prod"), False, None, [], None),  # first of a custom order
    # refused
    (BLESSED, "prod", {"dev"}, ORDER, False, None, None, [NEVER_STAGING]),
    (BLESSED, "prod", set(), ORDER, False, "urgent", None, [NEVER_STAGING]),  # a reason alone is no override
    (BLESSED, "staging", {"prod"}, ORDER, False, None, None,
     ["version 3 was never in 'dev' (environment order: dev -> staging -> prod); promote it there first"]),
    (NOT_BLESSED, "dev", set(), ORDER, False, None, None, [NOT_BLESSED_MSG]),
    # Regression: a mistyped environment ('prdo') became a new, unordered one.
    (BLESSED, "prdo", {"staging"}, ORDER, False, None, None, [NOT_IN_ORDER]),
    (NOT_BLESSED, "qa", set(), ORDER, False, None, None, [NOT_BLESSED_MSG, NOT_IN_ORDER.replace("prdo", "qa")]),
    (METADATA, "dev", set(), ORDER, False, None, None, [NO_BLESSING]),
    ({**METADATA, "blessing": {"blessed": "yes"}}, "dev", set(), ORDER, False, None, None, [NO_BLESSING]),
    ({**METADATA, "blessing": True}, "dev", set(), ORDER, False, None, None, [NO_BLESSING]),
    (NOT_BLESSED, "prod", {"dev"}, ORDER, False, None, None, [NOT_BLESSED_MSG, NEVER_STAGING]),
    # forced: allowed, and what was overridden is returned to be recorded
    (NOT_BLESSED, "prod", {"dev"}, ORDER, True, "hotfix for #12", [NOT_BLESSED_MSG, NEVER_STAGING], None),
    (METADATA, "dev", set(), ORDER, True, "legacy import", [NO_BLESSING], None),
    (BLESSED, "prod", {"staging"}, ORDER, True, "nothing to override", [], None),
    (BLESSED, "canary", set(), ORDER, True, "one-off canary", [NOT_IN_ORDER.replace("prdo", "canary")], None),
]


@pytest.mark.parametrize(("metadata", "env", "was_in", "order", "force", "reason", "overridden", "refused"), CASES)
def test_check_promotion_table(metadata, env, was_in, order, force, reason, overridden, refused):
    if refused is None:
        assert check_promotion("digits", 3, metadata, env, frozenset(was_in), order, force, reason) == overridden
        return
    with pytest.raises(PromotionRefusedError) as err:
        check_promotion("digits", 3, metadata, env, frozenset(was_in), order, force, reason)
    assert err.value.violations == refused
    assert str(err.value) == (
        f"cannot promote model 'digits' version 3 to {env!r}: " + "; ".join(refused)
        + ", or use --force --reason TEXT to override"
    )


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_force_needs_a_reason(reason):
    with pytest.raises(ValueError, match=r"forced promotion of model 'digits' version 3 to 'prod' needs a reason"):
        check_promotion("digits", 3, BLESSED, "prod", frozenset(), ORDER, True, reason)


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ([], "use a non-empty list"),
        ("dev,prod", "use a non-empty list"),
        (["dev", "dev"], "'dev' appears more than once"),
        (["dev", "../prod"], "invalid environment '../prod'"),
    ],
)
def test_bad_env_order(order, message):
    with pytest.raises(ValueError, match=message):
        validate_env_order(order)


def test_parse_env_order():
    assert parse_env_order("dev, qa ,prod") == ("dev", "qa", "prod")
    with pytest.raises(ValueError, match=r"invalid environment order 'dev,,prod': invalid environment ''"):
        parse_env_order("dev,,prod")


def move(previous, version):
    return {"previous_version": previous, "version": version}


# (history oldest first, current version, expected rollback target)
ROLLBACK_CASES = [
    ([move(None, 1)], 1, None),  # set once: nothing to go back to
    ([move(None, 1), move(1, 2)], 2, 1),
    ([move(None, 1), move(1, 2), move(2, 3)], 3, 2),
    ([move(None, 1), move(1, 2), move(2, 3), move(3, 2)], 2, 3),  # a second rollback undoes the first
    # Regression: a repeated promotion records 2 -> 2, which is not a version to go back to.
    ([move(None, 1), move(1, 2), move(2, 2)], 2, 1),
    ([move(None, 1), move(1, 1)], 1, None),
    ([], 1, None),
]


@pytest.mark.parametrize(("history", "current", "expected"), ROLLBACK_CASES)
def test_rollback_target_table(history, current, expected):
    assert rollback_target(history, current) == expected


def test_environments_of_version_reads_whole_histories():
    histories = {
        "dev": [{"version": 1}, {"version": 2}],  # moved on from 1, which still counts
        "staging": [{"version": 2}],
        "prod": [],
    }
    assert environments_of_version(histories, 1) == frozenset({"dev"})
    assert environments_of_version(histories, 2) == frozenset({"dev", "staging"})
    assert environments_of_version(histories, 3) == frozenset()


# --- on storage ------------------------------------------------------------------------------------


@pytest.fixture(params=["local", "gcs"])
def registry(request, tmp_path):
    uri = str(tmp_path / "registry") if request.param == "local" else request.getfixturevalue("gcs_registry_uri")
    return open_registry(uri)


@pytest.fixture()
def source(tmp_path) -> str:
    return make_source(tmp_path / "export")


def test_promote_through_the_order(registry, source):
    registry.push("digits", source, BLESSED, alias="dev", actor="ci")  # 1
    registry.push("digits", source, BLESSED, alias="dev", actor="ci")  # 2
    registry.push("digits", source, NOT_BLESSED)  # 3

    with pytest.raises(PromotionRefusedError, match=r"version 1 was never in 'staging'.*; promote it there first"):
        registry.promote("digits", 1, "prod", actor="ana")
    # Version 1 has left dev (dev -> 2), but its history counts.
    assert registry.promote("digits", 1, "staging", actor="ana")["previous_version"] is None
    registry.promote("digits", 2, "staging", actor="ana")
    entry = registry.promote("digits", 1, "prod", actor="ana", reason="release 1")
    assert {k: entry[k] for k in ("version", "previous_version", "action", "actor", "reason", "forced", "overridden")} \
        == {"version": 1, "previous_version": None, "action": "promote", "actor": "ana", "reason": "release 1",
            "forced": False, "overridden": []}
    with pytest.raises(PromotionRefusedError, match=r"version 3 was not blessed \(accuracy 0.41 < floor 0.5\)"):
        registry.promote("digits", 3, "dev", actor="bo")

    forced = registry.promote("digits", 3, "prod", actor="bo", reason="incident 7", force=True)
    assert (forced["forced"], forced["overridden"]) == (
        True,
        ["version 3 was not blessed (accuracy 0.41 < floor 0.5)",
         "version 3 was never in 'staging' (environment order: dev -> staging -> prod); promote it there first"],
    )
    assert registry.list_aliases("digits") == {"dev": 2, "staging": 2, "prod": 3}
    last = registry.audit("digits")[-1]
    assert {k: last[k] for k in ("alias", "action", "from_version", "to_version", "actor", "reason", "forced")} == {
        "alias": "prod", "action": "promote", "from_version": 1, "to_version": 3, "actor": "bo",
        "reason": "incident 7", "forced": True,
    }
    assert last["overridden"] == forced["overridden"]
    # Refusals write nothing.
    assert [e["to_version"] for e in registry.audit("digits", alias="prod")] == [1, 3]


def test_env_order_from_registry_json(registry, source):
    assert registry.env_order() == ("dev", "staging", "prod")
    registry.push("digits", source, BLESSED, alias="qa")
    assert registry.set_env_order(["qa", "prod"]) == ("qa", "prod")
    assert registry.env_order() == ("qa", "prod")
    # staging is no longer ordered; prod now follows qa.
    registry.promote("digits", 1, "prod")
    registry.push("digits", source, BLESSED)
    with pytest.raises(PromotionRefusedError, match=r"version 2 was never in 'qa' \(environment order: qa -> prod\)"):
        registry.promote("digits", 2, "prod")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "are not valid JSON"),
        (b"[1]", r"are not a JSON object \(got list\)"),
        (b'{"env-order": ["dev"]}', r"have unknown keys \['env-order'\]: use env_order"),
        (b'{"env_order": ["dev", "dev"]}', r"invalid 'env_order' \['dev', 'dev'\] in .*registry.json: 'dev' appears"),
    ],
)
def test_damaged_registry_json_is_named(registry, source, content, message):
    registry.push("digits", source, BLESSED)
    write_raw(registry, "registry.json", content)
    with pytest.raises(RegistryConfigError, match=message) as err:
        registry.promote("digits", 1, "dev")
    assert f"{registry.uri}/registry.json" in str(err.value)


def test_promote_with_damaged_metadata_names_the_version(registry, source):
    registry.push("digits", source, BLESSED)
    write_raw(registry, "digits/1/metadata.json", b'{"blessing": ')
    with pytest.raises(CorruptMetadataError, match=r"metadata of model 'digits' version 1 is not valid JSON: "):
        registry.promote("digits", 1, "dev")
    assert registry.get_alias("digits", "dev") is None


# --- command line --------------------------------------------------------------------------------


def test_cli_promote_refusals_and_force(registry, source, capsys):
    uri = registry.uri
    registry.push("digits", source, BLESSED, alias="dev")
    registry.push("digits", source, BLESSED, alias="dev")
    registry.push("digits", source, BLESSED, alias="dev")
    assert run(["models", "promote", "--registry-uri", uri, "--model", "digits", "--version", "2", "--to", "staging"]) == 0
    capsys.readouterr()

    assert run(["models", "promote", "--registry-uri", uri, "--model", "digits", "--version", "3", "--to", "prod"]) == 2
    assert capsys.readouterr().err == (
        "error: cannot promote model 'digits' version 3 to 'prod': " + NEVER_STAGING
        + ", or use --force --reason TEXT to override\n"
    )
    assert run(["models", "promote", "--registry-uri", uri, "--model", "digits", "--version", "3", "--to", "prod",
                "--force"]) == 2
    assert "needs a reason (--reason TEXT)" in capsys.readouterr().err
    assert registry.get_alias("digits", "prod") is None

    assert run(["models", "promote", "--registry-uri", uri, "--model", "digits", "--version", "3", "--to", "prod",
                "--force", "--reason", "security fix", "--actor", "ana", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "model": "digits", "alias": "prod", "version": 3, "previous_version": None, "forced": True,
        "overridden": [NEVER_STAGING],
    }
    assert run(["models", "promote", "--registry-uri", uri, "--model", "digits", "--version", "2", "--to", "prod"]) == 0


def test_cli_env_order(registry, capsys):
    uri = registry.uri
    assert run(["models", "env-order", "--registry-uri", uri]) == 0
    assert capsys.readouterr().out == "dev -> staging -> prod\n"
    assert run(["models", "env-order", "--registry-uri", uri, "--set", "dev,qa,prod", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"registry_uri": uri, "env_order": ["dev", "qa", "prod"],
                                                   "aliases_outside_order": []}
    assert open_registry(uri).env_order() == ("dev", "qa", "prod")
    assert run(["models", "env-order", "--registry-uri", uri, "--set", "dev,,prod"]) == 2
    assert capsys.readouterr().err == (
        "error: invalid environment order 'dev,,prod': invalid environment '': use 1 to 128 letters, digits, "
        "'-', '_' or '.', not starting with '.'\n"
    )


def test_cli_env_order_names_aliases_left_outside_it(registry, tmp_path, capsys):
    """``--set dev,qa,prod`` while ``staging`` was set succeeded in silence; promotions to
    ``staging`` were refused from then on with nothing to say why the order changed."""
    registry.push("digits", make_source(tmp_path / "export"), BLESSED, alias="dev")
    registry.promote("digits", 1, "staging")
    capsys.readouterr()
    assert run(["models", "env-order", "--registry-uri", registry.uri, "--set", "dev,qa,prod"]) == 0
    out, err = capsys.readouterr()
    assert out == "dev -> qa -> prod\n"
    assert err == ("warning: alias(es) set but not in the environment order: digits:staging; promotions to them are "
                   "refused until the order names them (models env-order --set ...)\n")
    assert open_registry(registry.uri).get_alias("digits", "staging") == 1  # nothing else changed
