"""The audit log of alias moves, on a local folder and on the GCS emulator: contents, concurrency,
damage, and ``models audit``."""

from __future__ import annotations

import datetime
import json
import os
import re

import pytest

from components.registry import CorruptMetadataError, LocalRegistry, open_registry
from gcs_emulator import gcs_emulator, gcs_registry_uri  # noqa: F401 - pytest fixtures
from test_models_cli import run
from test_registry import METADATA, _run_processes, make_source, stored_files, write_raw

BLESSED = {**METADATA, "blessing": {"blessed": True, "reason": "accuracy 0.96 >= floor 0.5"}}
EVENT_KEYS = ("alias", "action", "from_version", "to_version", "actor", "reason", "forced", "overridden")


@pytest.fixture(params=["local", "gcs"])
def registry(request, tmp_path):
    uri = str(tmp_path / "registry") if request.param == "local" else request.getfixturevalue("gcs_registry_uri")
    return open_registry(uri)


@pytest.fixture()
def source(tmp_path) -> str:
    return make_source(tmp_path / "export")


def brief(events):
    return [tuple(e[k] for k in EVENT_KEYS) for e in events]


def test_audit_fields_and_order(registry, source):
    registry.push("digits", source, BLESSED, alias="dev", actor="run-1")  # 1
    registry.push("digits", source, BLESSED)  # 2: no alias, so no event
    registry.push("digits", source, BLESSED, alias="dev", actor="run-3")  # 3
    registry.promote("digits", 1, "staging", actor="ana", reason="release 1")
    registry.promote("digits", 3, "staging", actor="ana")
    registry.rollback("digits", "staging", actor="bo", reason="latency regression")
    registry.promote("digits", 2, "prod", actor="bo", reason="incident 7", force=True)
    registry.set_alias("digits", "qa", 2, actor="qa-bot")

    never = "version 2 was never in 'staging' (environment order: dev -> staging -> prod); promote it there first"
    events = registry.audit("digits")
    assert brief(events) == [
        ("dev", "push", None, 1, "run-1", None, False, []),
        ("dev", "push", 1, 3, "run-3", None, False, []),
        ("staging", "promote", None, 1, "ana", "release 1", False, []),
        ("staging", "promote", 1, 3, "ana", None, False, []),
        ("staging", "rollback", 3, 1, "bo", "latency regression", False, []),
        ("prod", "promote", None, 2, "bo", "incident 7", True, [never]),
        ("qa", "promote", None, 2, "qa-bot", None, False, []),
    ]
    assert brief(registry.audit("digits", alias="staging")) == brief(events)[2:5]
    assert registry.audit("flowers") == []
    for event in events:
        assert set(event) == {"id", "time", "model", *EVENT_KEYS, "gated", "compared_with"}
        # None of these moves was a gated push (Registry.push without compared_with).
        assert (event["gated"], event["compared_with"]) == (False, None)
        assert event["model"] == "digits"
        assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{12}", event["id"])
        assert datetime.datetime.fromisoformat(event["time"]).utcoffset() == datetime.timedelta(0)
    # Each event is the alias history entry of the same move.
    history = registry.alias_history("digits", "staging")
    assert [e["event_id"] for e in history] == [e["id"] for e in events[2:5]]
    assert [e["time"] for e in history] == [e["time"] for e in events[2:5]]

    files = stored_files(registry)
    if isinstance(registry, LocalRegistry):
        assert "digits/audit.jsonl" in files
        with open(os.path.join(registry.root, "digits", "audit.jsonl")) as f:
            assert [json.loads(line) for line in f] == events
    else:
        assert {f for f in files if f.startswith("digits/audit/")} == {f"digits/audit/{e['id']}.json" for e in events}


def _promote_worker(uri, alias, version, rounds, worker, barrier, results):
    import traceback

    try:
        registry = open_registry(uri)
        barrier.wait(timeout=30)
        for r in range(rounds):
            # 'qa' is outside the environment order: promotions there are forced (with a reason).
            registry.promote("digits", version, alias, actor=f"w{worker}", reason=f"w{worker}-r{r}", force=alias == "qa")
        results.put((worker, rounds))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put((worker, traceback.format_exc()))


def test_concurrent_promotions_keep_every_audit_event(registry, source):
    registry.push("digits", source, BLESSED)
    registry.push("digits", source, BLESSED)
    rounds = 10
    # 4 processes: two race on 'dev' (same alias lock / same alias object), two on 'qa' (different
    # aliases, so only the audit log itself is shared).
    workers = [("dev", 1, 0), ("dev", 2, 1), ("qa", 1, 2), ("qa", 2, 3)]
    _run_processes(_promote_worker, [(registry.uri, alias, version, rounds, w) for alias, version, w in workers])

    events = registry.audit("digits")
    assert len(events) == 4 * rounds
    assert sorted(e["reason"] for e in events) == sorted(f"w{w}-r{r}" for w in range(4) for r in range(rounds))
    assert len({e["id"] for e in events}) == 4 * rounds
    for alias, version, w in workers:
        mine = [e for e in events if e["actor"] == f"w{w}"]
        assert [e["reason"] for e in mine] == [f"w{w}-r{r}" for r in range(rounds)]
        assert {(e["alias"], e["to_version"], e["action"]) for e in mine} == {(alias, version, "promote")}
    for alias in ("dev", "qa"):
        # The log holds exactly the alias's history, move for move.
        history = registry.alias_history("digits", alias)
        assert len(history) == 2 * rounds
        assert sorted(e["event_id"] for e in history) == sorted(e["id"] for e in events if e["alias"] == alias)
        if isinstance(registry, LocalRegistry):
            # Written under the alias lock: the file order is the commit order.
            assert [e["event_id"] for e in history] == [e["id"] for e in events if e["alias"] == alias]


def test_damaged_audit_log_is_named(registry, source):
    registry.push("digits", source, BLESSED, alias="dev")
    if isinstance(registry, LocalRegistry):
        with open(os.path.join(registry.root, "digits", "audit.jsonl"), "ab") as f:
            f.write(b'{"id": "torn\n')
        where = f"{registry.root}/digits/audit.jsonl line 2"
    else:
        write_raw(registry, "digits/audit/29990101T000000.000000Z-000000000000.json", b"[1]")
        where = f"{registry.uri}/digits/audit/29990101T000000.000000Z-000000000000.json"
    with pytest.raises(CorruptMetadataError, match="audit event is not") as err:
        registry.audit("digits")
    assert where in str(err.value)


def test_cli_audit(registry, source, capsys):
    registry.push("digits", source, BLESSED, alias="dev", actor="run-1")
    registry.push("digits", source, BLESSED, alias="dev", actor="run-2")
    assert run(["models", "promote", "--registry-uri", registry.uri, "--model", "digits", "--version", "2",
                "--to", "prod", "--force", "--reason", "demo day", "--actor", "ana"]) == 0
    assert run(["models", "rollback", "--registry-uri", registry.uri, "--model", "digits", "--alias", "dev",
                "--actor", "bo"]) == 0
    capsys.readouterr()

    assert run(["models", "audit", "--registry-uri", registry.uri, "--model", "digits", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"model": "digits", "events": registry.audit("digits")}
    assert [(e["alias"], e["action"], e["from_version"], e["to_version"]) for e in out["events"]] == [
        ("dev", "push", None, 1), ("dev", "push", 1, 2), ("prod", "promote", None, 2), ("dev", "rollback", 2, 1),
    ]

    assert run(["models", "audit", "--registry-uri", registry.uri, "--model", "digits", "--alias", "prod"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    time = out["events"][2]["time"]
    assert line == f"{time}  promote   prod  - -> 2  by ana  FORCED  (demo day)"

    registry.push("flowers", source, BLESSED)  # a version, no alias
    assert run(["models", "audit", "--registry-uri", registry.uri, "--model", "flowers"]) == 0
    assert capsys.readouterr().out == f"no alias moves of flowers in {registry.uri}\n"
    # A model the registry does not hold is an error (it used to read as "no alias moves").
    assert run(["models", "audit", "--registry-uri", registry.uri, "--model", "roses"]) == 2
    assert capsys.readouterr().err.startswith("error: no model 'roses' in")
