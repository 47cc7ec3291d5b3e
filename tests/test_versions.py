"""Tests of pipelines/versions.py and of the runs that submit/schedule start from a pipeline version.

Against the loopback KFP stand-in (tests/kfp_stand_in.py) with the real ``kfp.Client``: what the
requests carry (version id, service account, pipeline root, cron, concurrency, catch-up), one
version for the same content, a new one for changed content, and the two races.
"""

# No "from __future__ import annotations": see tiny_pipeline.py.
import datetime
import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from kfp_stand_in import kfp_server  # noqa: F401 - a pytest fixture
from pipelines import cli, remote, versions
from tiny_pipeline import package  # noqa: F401 - a pytest fixture

FRIDAY = datetime.datetime(2026, 12, 4, 10, 17, 3, tzinfo=datetime.timezone.utc)


def _changed_copy(package_path: str, tmp_path: Path, epochs_default: int) -> str:
    with open(package_path, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    docs[0]["root"]["inputDefinitions"]["parameters"]["epochs"]["defaultValue"] = epochs_default
    out = tmp_path / f"tiny-epochs-{epochs_default}.yaml"
    out.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(out)


def test_digest_ignores_layout_and_names_the_version(package: str, tmp_path: Path) -> None:
    with open(package, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    relaid = tmp_path / "relaid.yaml"
    relaid.write_text("# comment\n" + yaml.safe_dump_all(docs, indent=4, sort_keys=True))
    digest = versions.package_digest(package)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert versions.package_digest(str(relaid)) == digest
    assert versions.package_digest(_changed_copy(package, tmp_path, 7)) != digest
    assert versions.version_name_for(digest) == "sha256-" + digest[:12]


def test_submit_uploads_a_named_pipeline_and_a_content_version(kfp_server, package: str) -> None:
    fake, host = kfp_server
    result = remote.submit(host, package, {"data_uri": "/d"}, pipeline_name="retrain-digits")

    [lookup] = fake.calls("GET", "pipelines")
    assert json.loads(lookup["query"]["filter"][0])["predicates"][0]["stringValue"] == "retrain-digits"
    [created] = fake.calls("POST", "pipelines")
    assert created["body"]["display_name"] == "retrain-digits"
    [upload] = fake.calls("POST", "pipelines/upload_version")
    digest = versions.package_digest(package)
    assert upload["query"]["name"] == ["sha256-" + digest[:12]]
    assert upload["query"]["pipelineid"] == ["pl-1"]
    assert upload["query"]["description"] == [f"sha256:{digest}"]
    assert upload["body"]["uploadfile"]["data"] == Path(package).read_bytes()

    [run] = fake.calls("POST", "runs")
    assert run["body"]["pipeline_version_reference"] == {"pipeline_id": "pl-1", "pipeline_version_id": "pv-1"}
    assert (result["pipeline_id"], result["pipeline_name"]) == ("pl-1", "retrain-digits")
    assert (result["version_id"], result["version_name"], result["version_created"]) == (
        "pv-1", "sha256-" + digest[:12], True,
    )
    assert result["pipeline_url"] == f"{host}/#/pipelines/details/pl-1/version/pv-1"


def test_same_package_twice_gives_one_version(kfp_server, package: str) -> None:
    fake, host = kfp_server
    first = remote.submit(host, package, {"data_uri": "/d"})
    second = remote.submit(host, package, {"data_uri": "/e"})
    third = remote.schedule(host, package, {"data_uri": "/f"}, cron="0 0 3 * * *")

    assert len(fake.pipelines) == 1 and len(fake.versions) == 1
    assert len(fake.calls("POST", "pipelines")) == 1
    assert len(fake.calls("POST", "pipelines/upload_version")) == 1
    # The pipeline is named after the package by default.
    assert fake.pipelines["pl-1"]["display_name"] == "tiny-finetune"
    assert [first["version_created"], second["version_created"], third["version_created"]] == [True, False, False]
    references = [c["body"]["pipeline_version_reference"]["pipeline_version_id"] for c in fake.calls("POST", "runs")]
    assert references == ["pv-1", "pv-1"]
    assert fake.calls("POST", "recurringruns")[0]["body"]["pipeline_version_reference"]["pipeline_version_id"] == "pv-1"


def test_changed_package_gives_a_second_version(kfp_server, package: str, tmp_path: Path) -> None:
    fake, host = kfp_server
    first = remote.submit(host, package, {"data_uri": "/d"})
    changed = remote.submit(host, _changed_copy(package, tmp_path, 9), {"data_uri": "/d"})
    again = remote.submit(host, package, {"data_uri": "/d"})

    assert len(fake.pipelines) == 1
    assert sorted(v["name"] for v in fake.versions.values()) == sorted({first["version_name"], changed["version_name"]})
    assert first["version_name"] != changed["version_name"]
    assert (first["version_id"], changed["version_id"], again["version_id"]) == ("pv-1", "pv-2", "pv-1")
    assert fake.versions["pv-2"]["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]["epochs"]["defaultValue"] == 9


def test_pipeline_created_in_between_is_read_again(kfp_server, package: str) -> None:
    fake, host = kfp_server
    # Another client creates the pipeline after this one looked it up and found none.
    fake.pipelines["pl-7"] = {"pipeline_id": "pl-7", "display_name": "tiny-finetune", "created_at": "2026-12-04T09:00:00Z"}
    fake.stale_lists["pipelines"] = 1
    result = remote.submit(host, package, {"data_uri": "/d"})
    [create] = fake.calls("POST", "pipelines")
    assert create["body"]["display_name"] == "tiny-finetune"  # answered 409
    assert len(fake.calls("GET", "pipelines")) == 2
    assert list(fake.pipelines) == ["pl-7"]
    assert result["pipeline_id"] == "pl-7"
    assert fake.calls("POST", "runs")[0]["body"]["pipeline_version_reference"]["pipeline_id"] == "pl-7"


def test_version_uploaded_in_between_is_reused(kfp_server, package: str) -> None:
    fake, host = kfp_server
    name = versions.version_name_for(versions.package_digest(package))
    fake.pipelines["pl-1"] = {"pipeline_id": "pl-1", "display_name": "tiny-finetune", "created_at": "2026-12-04T09:00:00Z"}
    fake.versions["pv-5"] = {"pipeline_id": "pl-1", "pipeline_version_id": "pv-5", "name": name, "display_name": name,
                             "created_at": "2026-12-04T09:01:00Z"}
    fake.stale_lists["versions"] = 1
    result = remote.submit(host, package, {"data_uri": "/d"})
    assert len(fake.calls("POST", "pipelines/upload_version")) == 1  # answered 409
    assert (result["version_id"], result["version_created"]) == ("pv-5", False)
    assert list(fake.versions) == ["pv-5"]


def test_conflict_for_a_name_the_server_does_not_list(kfp_server, package: str) -> None:
    fake, host = kfp_server
    fake.pipelines["pl-1"] = {"pipeline_id": "pl-1", "display_name": "tiny-finetune", "created_at": "2026-12-04T09:00:00Z"}
    fake.stale_lists["pipelines"] = 2
    with pytest.raises(ValueError, match="pipeline 'tiny-finetune' exists \\(409\\) but lists none"):
        remote.submit(host, package, {"data_uri": "/d"})
    assert fake.calls("POST", "runs") == []


def test_two_pipelines_with_the_name_are_refused(kfp_server, package: str) -> None:
    fake, host = kfp_server
    for pipeline_id in ("pl-1", "pl-2"):
        fake.pipelines[pipeline_id] = {"pipeline_id": pipeline_id, "display_name": "tiny-finetune"}
    with pytest.raises(ValueError, match="2 pipelines are named 'tiny-finetune' \\(ids pl-1, pl-2\\)"):
        remote.submit(host, package, {"data_uri": "/d"})


def test_submit_sends_service_account_and_pipeline_root(kfp_server, package: str) -> None:
    fake, host = kfp_server
    result = remote.submit(
        host, package, {"data_uri": "gs://b/d"}, service_account="kfp-finetune-runner", pipeline_root="gs://b/root"
    )
    body = fake.calls("POST", "runs")[0]["body"]
    assert body["service_account"] == "kfp-finetune-runner"
    assert body["runtime_config"] == {"parameters": {"data_uri": "gs://b/d"}, "pipeline_root": "gs://b/root"}
    assert (result["service_account"], result["pipeline_root"]) == ("kfp-finetune-runner", "gs://b/root")


def test_without_identity_nothing_is_sent(kfp_server, package: str) -> None:
    fake, host = kfp_server
    remote.submit(host, package, {"data_uri": "/d"})
    body = fake.calls("POST", "runs")[0]["body"]
    assert "service_account" not in body and "pipeline_root" not in body["runtime_config"]


def test_schedule_carries_version_identity_cron_concurrency_catchup(kfp_server, package: str) -> None:
    fake, host = kfp_server
    result = remote.schedule(
        host, package, {"data_uri": "/d"}, cron="0 3 * * 1-5", max_concurrency=3, no_catchup=False,
        service_account="trainer", pipeline_root="s3://bucket/root", pipeline_name="nightly-digits", now=FRIDAY,
    )
    body = fake.calls("POST", "recurringruns")[0]["body"]
    assert body["pipeline_version_reference"] == {"pipeline_id": "pl-1", "pipeline_version_id": "pv-1"}
    assert body["service_account"] == "trainer"
    assert body["runtime_config"]["pipeline_root"] == "s3://bucket/root"
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1-5"}}
    assert int(body["max_concurrency"]) == 3
    assert body["no_catchup"] is False
    assert fake.pipelines["pl-1"]["display_name"] == "nightly-digits"
    # Monday to Friday at 03:00 UTC, after Friday 10:17.
    assert result["next_fire_times_utc"] == ["2026-12-07T03:00:00Z", "2026-12-08T03:00:00Z", "2026-12-09T03:00:00Z"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"service_account": "Pipeline_Runner"}, "--service-account 'Pipeline_Runner' is not a Kubernetes service account name"),
        ({"service_account": ""}, "--service-account ''"),
        ({"pipeline_root": "/tmp/root"}, "--pipeline-root '/tmp/root' is not a URI"),
        ({"pipeline_root": "gs://b/my root"}, "--pipeline-root 'gs://b/my root'"),
    ],
)
def test_bad_identity_is_refused_before_any_request(kfp_server, package: str, kwargs: dict, fragment: str) -> None:
    fake, host = kfp_server
    with pytest.raises(ValueError, match=re.escape(fragment)):
        remote.submit(host, package, {"data_uri": "/d"}, **kwargs)
    assert fake.requests == []


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_cli_schedule_flags_reach_the_request_and_next_runs_are_printed(kfp_server, package: str) -> None:
    fake, host = kfp_server
    before = datetime.datetime.now(datetime.timezone.utc)
    code, out, err = _main(
        ["schedule", "--host", host, "--package", package, "--param", "data_uri=/d", "--cron", "0 0 3 * * *",
         "--service-account", "trainer", "--pipeline-root", "gs://b/root", "--pipeline-name", "nightly",
         "--max-concurrency", "2"]
    )
    assert code == 0, err
    body = fake.calls("POST", "recurringruns")[0]["body"]
    assert (body["service_account"], body["runtime_config"]["pipeline_root"]) == ("trainer", "gs://b/root")
    assert body["pipeline_version_reference"]["pipeline_version_id"] == "pv-1"
    assert (int(body["max_concurrency"]), body["no_catchup"]) == (2, True)
    result = json.loads(out)
    assert result["pipeline_name"] == "nightly" and result["version_id"] == "pv-1"
    times = [datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
             for t in result["next_fire_times_utc"]]
    assert all(t.hour == 3 and t.minute == 0 for t in times)
    assert before < times[0] <= before + datetime.timedelta(days=1)
    assert [b - a for a, b in zip(times, times[1:])] == [datetime.timedelta(days=1)] * 2
    assert f"next runs (UTC): {', '.join(result['next_fire_times_utc'])}\n" in err


def test_cli_bad_service_account_exits_2_before_compiling(kfp_server, package: str) -> None:
    fake, host = kfp_server
    code, out, err = _main(["submit", "--host", host, "--package", package, "--param", "data_uri=/d",
                            "--service-account", "Bad_Name"])
    assert (code, out) == (2, "")
    assert err.startswith("error: --service-account 'Bad_Name' is not a Kubernetes service account name")
    assert err.count("\n") == 1
    assert fake.requests == []
