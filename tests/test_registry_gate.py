"""The champion/challenger gate cannot be raced: a push moves the alias only if it still points at the
version the challenger was compared with (``Registry.push(compared_with=...)``), on a local folder
and on the GCS emulator. Refusals publish nothing and name both versions; the push step reports
"not pushed: the champion changed from vN to vM since evaluation"; every gated move records what
it was compared with.

The concurrency test runs overlapping "runs" in separate processes: each reads the champion, takes
a while to "evaluate" (the blessing rule of ``components.evaluate.decide_blessing`` on pre-made
accuracies), and calls the push step function ``run_push_step`` with its evaluation.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import time
import traceback

import pytest

from components.evaluate import decide_blessing
from components.push import PushSettings, run_push, run_push_step
from components.registry import ChampionChangedError, check_registry, open_registry
from components.registry.gcs_objects import ObjectStore
from gcs_emulator import gcs_emulator, gcs_registry_uri  # noqa: F401 - pytest fixtures
from test_registry import METADATA, make_source, stored_files

STATISTICS = {"fingerprint": "sha256:test", "class_counts": {"a": 3, "b": 3}}


@pytest.fixture(params=["local", "gcs"])
def registry_uri(request, tmp_path) -> str:
    return str(tmp_path / "registry") if request.param == "local" else request.getfixturevalue("gcs_registry_uri")


@pytest.fixture()
def registry(registry_uri):
    return open_registry(registry_uri)


@pytest.fixture()
def source(tmp_path):
    return make_source(tmp_path / "export")


def make_model_dir(path) -> str:
    """A finetune ``model`` artifact's layout with small stand-in files (the registry copies bytes)."""
    (path / "serving" / "variables").mkdir(parents=True)
    (path / "serving" / "saved_model.pb").write_bytes(b"graph")
    (path / "serving" / "variables" / "variables.index").write_bytes(b"index")
    (path / "model.keras").write_bytes(b"keras")
    (path / "training.json").write_text(json.dumps({
        "settings": {"base_model": "mobilenet_v2", "base_weights": "imagenet"}, "labels": ["a", "b"], "image_size": 32,
    }))
    return str(path)


def make_evaluation(accuracy: float, champion_version: int | None, champion_accuracy: float | None) -> dict:
    """What the evaluate step writes, for a challenger of ``accuracy`` against the given champion."""
    blessing = decide_blessing("accuracy", accuracy, 0.0, champion_accuracy, 0.0)
    champion = None if champion_version is None else {"version": champion_version, "status": "compared",
                                                      "accuracy": champion_accuracy}
    return {"metrics": {"accuracy": accuracy, "macro_f1": accuracy, "log_loss": 1.0, "num_examples": 100},
            "class_names": ["a", "b"], "blessed": blessing.blessed, "reason": blessing.reason,
            "champion": champion, "champion_version": champion_version, "diagnosis": None}


def write_step_inputs(root, evaluation: dict) -> tuple[str, str]:
    """The evaluation artifact (a file) and the statistics artifact (a folder) of a push step."""
    os.makedirs(root / "statistics", exist_ok=True)
    (root / "statistics" / "statistics.json").write_text(json.dumps(STATISTICS))
    (root / "evaluation.json").write_text(json.dumps(evaluation))
    return str(root / "evaluation.json"), str(root / "statistics")


def snapshot(registry) -> dict:
    """Everything a refusal must leave unchanged: stored files, versions, aliases, histories, audit."""
    models = registry.list_models()
    return {
        "files": stored_files(registry),
        "versions": {m: registry.list_versions(m) for m in models},
        "aliases": {m: registry.list_aliases(m) for m in models},
        "histories": {m: {a: registry.alias_history(m, a) for a in registry.list_aliases(m)} for m in models},
        "audit": {m: registry.audit(m) for m in models},
    }


# --- the gate, one push at a time ---------------------------------------------------------------


def test_a_gated_push_records_what_it_was_compared_with(registry, source):
    assert registry.push("digits", source, METADATA, alias="prod", actor="run-1", compared_with=None).version == 1
    assert registry.push("digits", source, METADATA, alias="prod", actor="run-2", compared_with=1).version == 2
    history = registry.alias_history("digits", "prod")
    assert [(e["previous_version"], e["version"], e["gated"], e["compared_with"]) for e in history] == [
        (None, 1, True, None), (1, 2, True, 1)
    ]
    events = registry.audit("digits")
    assert [(e["from_version"], e["to_version"], e["gated"], e["compared_with"]) for e in events] == [
        (None, 1, True, None), (1, 2, True, 1)
    ]
    assert [e["id"] for e in events] == [e["event_id"] for e in history]


@pytest.mark.reliability("registry")
@pytest.mark.parametrize("compared_with, current", [(1, 2), (None, 1), (2, None)])
def test_a_push_compared_with_another_champion_is_refused_and_publishes_nothing(registry, source, compared_with, current):
    for _ in range(current or 0):
        registry.push("digits", source, METADATA)
    if current is not None:
        registry.set_alias("digits", "prod", current)
    else:
        registry.push("digits", source, METADATA)  # the model exists, the alias does not
    before = snapshot(registry)
    with pytest.raises(ChampionChangedError) as refused:
        registry.push("digits", source, METADATA, alias="prod", actor="late-run", compared_with=compared_with)
    was = "none" if compared_with is None else f"v{compared_with}"
    now = "none" if current is None else f"v{current}"
    assert str(refused.value).startswith(f"not pushed: the champion changed from {was} to {now} since evaluation "
                                         "(alias 'prod' of model 'digits')")
    assert (refused.value.compared_with, refused.value.current) == (compared_with, current)
    assert snapshot(registry) == before  # no version, alias move, audit event, lock file or folder


@pytest.mark.reliability("registry")
def test_a_champion_that_changes_during_the_upload_refuses_the_push(registry, registry_uri, source, monkeypatch):
    """The alias moves after the push's first check, while its files are being copied: the check at
    publication refuses, and the version never appears."""
    registry.push("digits", source, METADATA, alias="prod")  # 1
    registry.push("digits", source, METADATA)  # 2
    other = open_registry(registry_uri)
    real_put = type(registry)._put_file
    calls = []

    def put_and_meanwhile_promote(self, source_file, dest):
        calls.append(dest)
        if len(calls) == 2:
            other.set_alias("digits", "prod", 2, actor="other-run")
        real_put(self, source_file, dest)

    monkeypatch.setattr(type(registry), "_put_file", put_and_meanwhile_promote)
    with pytest.raises(ChampionChangedError, match="the champion changed from v1 to v2 since evaluation"):
        registry.push("digits", source, METADATA, alias="prod", actor="late-run", compared_with=1)
    monkeypatch.setattr(type(registry), "_put_file", real_put)

    assert len(calls) == 5 and registry.list_versions("digits") == [1, 2]
    assert [(e["actor"], e["to_version"]) for e in registry.audit("digits")] == [(None, 1), ("other-run", 2)]
    files = stored_files(registry)
    assert not [f for f in files if f.startswith("digits/3/") or f.startswith("digits/.tmp-") or f == "digits/.reserved/3"]
    assert check_registry(registry) == []


@pytest.mark.reliability("registry")
def test_gcs_withdraws_a_version_whose_swap_lost_to_a_new_champion(gcs_registry_uri, source, monkeypatch):
    """The last instant on GCS: metadata.json is written, then another run moves the alias before
    the compare-and-swap. The swap fails, the gate refuses, and the version is withdrawn."""
    registry = open_registry(gcs_registry_uri)
    registry.push("digits", source, METADATA, alias="prod")  # 1
    registry.push("digits", source, METADATA)  # 2
    other = open_registry(gcs_registry_uri)
    real_create = ObjectStore.create_or_fail

    def create_then_promote(self, name, data, content_type=None):
        real_create(self, name, data, content_type)
        if name.endswith("/3/metadata.json"):
            assert registry.list_versions("digits") == [1, 2, 3]  # published, for this one request
            other.set_alias("digits", "prod", 2, actor="other-run")

    monkeypatch.setattr(ObjectStore, "create_or_fail", create_then_promote)
    with pytest.raises(ChampionChangedError, match="from v1 to v2"):
        registry.push("digits", source, METADATA, alias="prod", actor="late-run", compared_with=1)
    monkeypatch.setattr(ObjectStore, "create_or_fail", real_create)

    assert registry.list_versions("digits") == [1, 2]
    assert registry.get_alias("digits", "prod") == 2
    assert not [f for f in stored_files(registry) if f.startswith("digits/3/") or f == "digits/.reserved/3"]
    assert [e["actor"] for e in registry.audit("digits")] == [None, "other-run"]


# --- the push step --------------------------------------------------------------------------------


@pytest.mark.reliability("registry")
def test_the_push_step_reports_a_changed_champion_and_run_local_says_so(registry_uri, tmp_path, capsys):
    from pipelines.cli import _print_result
    from pipelines.local import pushed_output

    settings = PushSettings(registry_uri=registry_uri, model_name="digits", target_env="prod", data_uri="/data")
    model_dir = make_model_dir(tmp_path / "model")
    first = run_push(model_dir, make_evaluation(0.5, None, None), STATISTICS, settings, "run-1")
    assert first["version"] == 1
    registry = open_registry(registry_uri)
    registry.push("digits", os.path.join(model_dir, "serving"), {"metrics": {"accuracy": 0.9}}, alias="prod",
                  compared_with=1)  # v2, pushed by another run meanwhile
    before = snapshot(registry)
    evaluation_path, statistics_dir = write_step_inputs(tmp_path, make_evaluation(0.7, 1, 0.5))

    result = run_push_step(model_dir, evaluation_path, statistics_dir, settings, "run-3")
    assert result == {"model": "digits", "version": None, "uri": None, "alias": "prod",
                      "not_pushed": "the champion changed from v1 to v2 since evaluation"}
    assert snapshot(registry) == before
    pushed, not_pushed = pushed_output(json.dumps(result), "clears the floor")
    assert pushed_output("", "accuracy 0.2 is below the floor 0.5") == (None, "not blessed: accuracy 0.2 is below the floor 0.5")
    assert (pushed, not_pushed) == (None, "the champion changed from v1 to v2 since evaluation")
    capsys.readouterr()
    _print_result({"metrics": {"accuracy": 0.7, "macro_f1": 0.7}, "blessed": True, "reason": "clears the floor",
                   "pushed": None, "not_pushed": not_pushed, "run_dir": str(tmp_path)})
    assert "not pushed: the champion changed from v1 to v2 since evaluation\n" in capsys.readouterr().out


@pytest.mark.reliability("registry")
def test_an_evaluation_without_its_champion_is_refused_before_anything_is_written(registry_uri, tmp_path):
    settings = PushSettings(registry_uri=registry_uri, model_name="digits", target_env="prod", data_uri="/data")
    evaluation = make_evaluation(0.7, None, None)
    del evaluation["champion"], evaluation["champion_version"]
    with pytest.raises(ValueError, match=r"evaluation records no champion_version .*cannot tell which champion"):
        run_push(make_model_dir(tmp_path / "model"), evaluation, STATISTICS, settings, "run-1")
    assert open_registry(registry_uri).list_models() == []
    assert not os.path.exists(registry_uri)  # a local registry folder is not even made (GCS: no path)


# --- overlapping runs -----------------------------------------------------------------------------

WORKERS = 6
ROUNDS = 4


def _run(uri: str, worker: int, accuracies: list[float], root: str, barrier, results) -> None:
    """Runs one after another: read the champion, evaluate a while, push through the gate.

    The first run of every worker reads the champion at the same moment (between two barriers),
    so they all compare with the same one; later runs drift apart and overlap at random.
    """
    import pathlib

    try:
        from components.registry import champion

        settings = PushSettings(registry_uri=uri, model_name="digits", target_env="prod", data_uri="/data")
        model_dir = make_model_dir(pathlib.Path(root) / f"w{worker}" / "model")
        rng = random.Random(worker)
        barrier.wait(timeout=60)
        for round_, accuracy in enumerate(accuracies):
            found = champion(uri, "digits", "prod")
            version = None if found is None else found["version"]
            champion_accuracy = None if version is None else open_registry(uri).get_metadata("digits", version)["metrics"]["accuracy"]
            if round_ == 0:
                barrier.wait(timeout=60)
            time.sleep(rng.uniform(0.0, 0.4))  # scoring takes a while: the runs overlap
            evaluation = make_evaluation(accuracy, version, champion_accuracy)
            if not evaluation["blessed"]:
                results.put((worker, round_, accuracy, "not blessed"))
                continue
            inputs = write_step_inputs(pathlib.Path(root) / f"w{worker}" / f"r{round_}", evaluation)
            done = run_push_step(model_dir, *inputs, settings, f"w{worker}-r{round_}")
            results.put((worker, round_, accuracy, "pushed" if done["version"] else done["not_pushed"]))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put((worker, -1, 0.0, traceback.format_exc()))


def test_overlapping_runs_never_let_a_worse_model_replace_a_better_one(registry, registry_uri, tmp_path):
    rng = random.Random(13)
    # Distinct qualities that tend to rise from run to run, as retraining on more data does.
    plan = {w: [round(rng.uniform(0.05, 0.45) + 0.15 * r, 4) for r in range(ROUNDS)] for w in range(WORKERS)}
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    processes = [ctx.Process(target=_run, args=(registry_uri, w, plan[w], str(tmp_path), barrier, results))
                 for w in range(WORKERS)]
    for p in processes:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(WORKERS * ROUNDS)]
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    errors = [o for o in outcomes if o[1] < 0]
    assert not errors, errors

    pushed = [o for o in outcomes if o[3] == "pushed"]
    refused = [o for o in outcomes if o[3].startswith("the champion changed from")]
    assert len(pushed) + len(refused) + sum(o[3] == "not blessed" for o in outcomes) == WORKERS * ROUNDS
    # The first runs all compared with "no champion": one won, the other five were refused.
    assert sum(o[1] == 0 and o[3].startswith("the champion changed from none to v") for o in outcomes) == WORKERS - 1
    # Only what passed the gate was published: one version, and one audit event, per push.
    versions = registry.list_versions("digits")
    events = registry.audit("digits", alias="prod")
    assert len(versions) == len(events) == len(pushed)
    # The audit check: every alias move was compared against the alias's previous version ...
    checked = [e for e in events if e["action"] == "push" and e["gated"] and e["compared_with"] == e["from_version"]]
    assert checked == events
    history = registry.alias_history("digits", "prod")
    assert [e["previous_version"] for e in history] == [None, *[e["version"] for e in history[:-1]]]
    # ... so the champion's accuracy never went down ...
    accuracy = {v: registry.get_metadata("digits", v)["metrics"]["accuracy"] for v in versions}
    assert [accuracy[e["version"]] for e in history] == sorted(accuracy[e["version"]] for e in history)
    # ... although refused runs would have replaced a better champion with a worse model.
    worse = [o for o in refused if o[2] < accuracy[int(o[3].split(" to v")[1].split()[0])]]
    # The evaluation kept with each version names the champion it beat: the alias's previous version.
    for e in history:
        local = registry.download_version("digits", e["version"], str(tmp_path / f"check-{e['version']}"))
        with open(os.path.join(local, "evaluation.json")) as f:
            assert json.load(f)["champion_version"] == e["previous_version"]
    assert check_registry(registry) == []
    print(f"race ({type(registry).__name__}): {WORKERS} overlapping workers x {ROUNDS} runs = {WORKERS * ROUNDS} runs: "
          f"{len(pushed)} pushed, {len(refused)} refused because the champion changed ({len(worse)} of them worse than "
          f"the new champion), {WORKERS * ROUNDS - len(pushed) - len(refused)} not blessed; audit check: "
          f"{len(checked)} of {len(events)} alias moves compared against the alias's previous version")


@pytest.mark.reliability("faults")
def test_a_version_whose_alias_write_failed_is_withdrawn(tmp_path, source, monkeypatch):
    """Local: the version is renamed into place under the alias lock, then the alias file is
    written; when that write fails (a full disk), nothing points at the version, so it goes."""
    from components.registry import local

    registry = open_registry(str(tmp_path / "registry"))
    registry.push("digits", source, METADATA, alias="prod")  # 1
    before = snapshot(registry)
    real_write = local._write_file_atomic

    def write(path, data):
        if path.endswith(os.path.join("aliases", "prod.json")):
            raise OSError(28, f"No space left on device (simulated): {path}")
        real_write(path, data)

    monkeypatch.setattr(local, "_write_file_atomic", write)
    with pytest.raises(OSError, match=r"No space left on device \(simulated\): .*aliases/prod.json"):
        registry.push("digits", source, METADATA, alias="prod", compared_with=1)
    monkeypatch.setattr(local, "_write_file_atomic", real_write)
    assert snapshot(registry) == before  # version 2 withdrawn; no trash or temporary folder left
    assert registry.push("digits", source, METADATA, alias="prod", compared_with=1).version == 2
