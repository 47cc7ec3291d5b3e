"""Tests of ``kfp-finetune runs`` and ``kfp-finetune schedules`` (pipelines/runs.py, runs_cli.py).

Against the loopback KFP stand-in (tests/kfp_stand_in.py) with the real ``kfp.Client``: the
requests each action sends, its plain-text and ``--json`` output with the stored values, and the
errors (unknown id, unknown experiment, bad page size, a host that does not answer).
"""

# No "from __future__ import annotations": see tiny_pipeline.py.
import datetime
import io
import json
import socket
from contextlib import redirect_stderr, redirect_stdout

import pytest

from kfp_stand_in import kfp_server  # noqa: F401 - a pytest fixture
from pipelines import cli
from pipelines.kfp_api import utc_text


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def _seed_runs(fake) -> None:
    fake.experiments["exp-1"] = {"experiment_id": "exp-1", "display_name": "kfp-finetune"}
    fake.experiments["exp-2"] = {"experiment_id": "exp-2", "display_name": "nightly"}
    fake.add_run(
        "run-a", display_name="first", experiment_id="exp-1", state="SUCCEEDED",
        finished_at="2026-12-04T10:30:00Z", service_account="trainer",
        runtime_config={"parameters": {"data_uri": "gs://b/d", "epochs": 3}, "pipeline_root": "gs://b/root"},
        pipeline_version_reference={"pipeline_id": "pl-1", "pipeline_version_id": "pv-1"},
    )
    fake.add_run("run-b", display_name="second", experiment_id="exp-2", state="FAILED",
                 finished_at="2026-12-04T10:40:00Z", error={"code": 2, "message": "finetune: out of memory"})
    fake.add_run("run-c", display_name="third", experiment_id="exp-1", state="RUNNING",
                 finished_at="1970-01-01T00:00:00Z", recurring_run_id="rr-1")


def test_runs_list_plain_newest_first(kfp_server) -> None:
    fake, host = kfp_server
    _seed_runs(fake)
    code, out, err = _main(["runs", "list", "--host", host])
    assert code == 0, err
    [request] = fake.calls("GET", "runs")
    assert request["query"]["sort_by"] == ["created_at desc"]
    assert request["query"]["page_size"] == ["20"]
    assert out.splitlines() == [
        "RUN ID  STATE      CREATED (UTC)         FINISHED (UTC)        NAME",
        "run-c   RUNNING    2026-12-04T10:03:00Z  -                     third",
        "run-b   FAILED     2026-12-04T10:02:00Z  2026-12-04T10:40:00Z  second",
        "run-a   SUCCEEDED  2026-12-04T10:01:00Z  2026-12-04T10:30:00Z  first",
        "3 of 3 runs",
    ]


def test_runs_list_experiment_filter_and_pages_json(kfp_server) -> None:
    fake, host = kfp_server
    _seed_runs(fake)
    code, out, err = _main(["runs", "list", "--host", host, "--experiment", "kfp-finetune", "--page-size", "1", "--json"])
    assert code == 0, err
    request = fake.calls("GET", "runs")[0]
    assert request["query"]["experiment_id"] == ["exp-1"]
    assert request["query"]["page_size"] == ["1"]
    page = json.loads(out)
    assert [r["run_id"] for r in page["runs"]] == ["run-c"]
    assert (page["total_size"], page["next_page_token"]) == (2, "1")
    assert page["runs"][0]["recurring_run_id"] == "rr-1" and page["runs"][0]["finished_at"] is None

    code, out, _ = _main(["runs", "list", "--host", host, "--experiment", "kfp-finetune", "--page-size", "1",
                          "--page-token", "1"])
    assert code == 0
    assert out.splitlines()[1].startswith("run-a ")
    assert out.splitlines()[-1] == "1 of 2 runs"
    code, out, _ = _main(["runs", "list", "--host", host, "--page-size", "2"])
    assert out.splitlines()[-2:] == ["2 of 3 runs", "more: add --page-token 2"]


def test_runs_get_json_and_plain(kfp_server) -> None:
    fake, host = kfp_server
    _seed_runs(fake)
    code, out, err = _main(["runs", "get", "run-a", "--host", host, "--json"])
    assert code == 0, err
    assert json.loads(out) == {
        "run_id": "run-a",
        "name": "first",
        "state": "SUCCEEDED",
        "experiment_id": "exp-1",
        "pipeline_id": "pl-1",
        "version_id": "pv-1",
        "recurring_run_id": None,
        "service_account": "trainer",
        "pipeline_root": "gs://b/root",
        "params": {"data_uri": "gs://b/d", "epochs": 3},
        "created_at": "2026-12-04T10:01:00Z",
        "finished_at": "2026-12-04T10:30:00Z",
        "error": None,
        "url": f"{host}/#/runs/details/run-a",
    }
    code, out, _ = _main(["runs", "get", "run-b", "--host", host])
    lines = out.splitlines()
    assert lines[0] == "run id:           run-b"
    assert "state:            FAILED" in lines
    assert "error:            finetune: out of memory" in lines
    assert "pipeline id:      -" in lines
    assert lines[-1] == "params:           -"
    code, out, _ = _main(["runs", "get", "run-a", "--host", host])
    assert out.splitlines()[-1] == "params:           data_uri=gs://b/d, epochs=3"


def test_runs_cancel_terminates_and_shows_state(kfp_server) -> None:
    fake, host = kfp_server
    _seed_runs(fake)
    code, out, err = _main(["runs", "cancel", "run-c", "--host", host])
    assert code == 0, err
    assert len(fake.calls("POST", "runs/run-c:terminate")) == 1
    assert out.splitlines()[0] == "cancel requested: run run-c is CANCELING"
    code, out, _ = _main(["runs", "cancel", "run-c", "--host", host, "--json"])
    assert json.loads(out)["state"] == "CANCELING"


def _seed_schedules(fake) -> None:
    fake.add_recurring(
        "rr-1", display_name="nightly", experiment_id="exp-1", status="ENABLED", max_concurrency="2",
        no_catchup=True, trigger={"cron_schedule": {"cron": "0 0 3 * * *"}}, service_account="trainer",
        pipeline_version_reference={"pipeline_id": "pl-1", "pipeline_version_id": "pv-1"},
        runtime_config={"parameters": {"data_uri": "gs://b/d"}, "pipeline_root": "gs://b/root"},
    )
    fake.add_recurring("rr-2", display_name="hourly", experiment_id="exp-1", status="DISABLED", max_concurrency="1",
                       no_catchup=False, trigger={"periodic_schedule": {"interval_second": "3600"}})


def test_schedules_list_plain_and_json(kfp_server) -> None:
    fake, host = kfp_server
    _seed_schedules(fake)
    code, out, err = _main(["schedules", "list", "--host", host])
    assert code == 0, err
    assert fake.calls("GET", "recurringruns")[0]["query"]["sort_by"] == ["created_at desc"]
    assert out.splitlines() == [
        "SCHEDULE ID  STATUS    TRIGGER      CONCURRENCY  CATCH-UP  CREATED (UTC)         NAME",
        "rr-2         DISABLED  every 3600s  1            yes       2026-12-04T10:02:00Z  hourly",
        "rr-1         ENABLED   0 0 3 * * *  2            no        2026-12-04T10:01:00Z  nightly",
        "2 of 2 schedules",
    ]
    code, out, _ = _main(["schedules", "list", "--host", host, "--json"])
    [hourly, nightly] = json.loads(out)["schedules"]
    assert nightly == {
        "recurring_run_id": "rr-1",
        "name": "nightly",
        "status": "ENABLED",
        "cron": "0 0 3 * * *",
        "interval_s": None,
        "max_concurrency": 2,
        "no_catchup": True,
        "experiment_id": "exp-1",
        "pipeline_id": "pl-1",
        "version_id": "pv-1",
        "service_account": "trainer",
        "pipeline_root": "gs://b/root",
        "params": {"data_uri": "gs://b/d"},
        "created_at": "2026-12-04T10:01:00Z",
        "updated_at": "2026-12-04T10:01:00Z",
        "url": f"{host}/#/recurringrun/details/rr-1",
    }
    assert (hourly["interval_s"], hourly["cron"], hourly["no_catchup"]) == (3600, None, False)


def test_schedules_pause_resume_delete(kfp_server) -> None:
    fake, host = kfp_server
    _seed_schedules(fake)
    code, out, err = _main(["schedules", "pause", "rr-1", "--host", host])
    assert code == 0, err
    assert len(fake.calls("POST", "recurringruns/rr-1:disable")) == 1
    assert out.splitlines()[0] == "paused: schedule rr-1 is DISABLED"
    assert "cron:            0 0 3 * * *" in out.splitlines()

    code, out, _ = _main(["schedules", "resume", "rr-1", "--host", host, "--json"])
    assert len(fake.calls("POST", "recurringruns/rr-1:enable")) == 1
    assert json.loads(out)["status"] == "ENABLED"

    code, out, _ = _main(["schedules", "delete", "rr-2", "--host", host])
    assert len(fake.calls("DELETE", "recurringruns/rr-2")) == 1
    assert out == "deleted: schedule rr-2 (its past runs stay)\n"
    assert list(fake.recurring) == ["rr-1"]
    code, out, _ = _main(["schedules", "delete", "rr-1", "--host", host, "--json"])
    assert json.loads(out) == {"recurring_run_id": "rr-1", "deleted": True}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runs", "get", "nope"], "error: KFP API answered 404 Not Found: run nope not found\n"),
        (["runs", "cancel", "nope"], "error: KFP API answered 404 Not Found: run nope not found\n"),
        (["schedules", "pause", "rr-9"], "error: KFP API answered 404 Not Found: recurring run rr-9 not found\n"),
        (["schedules", "delete", "rr-9", "--json"], "error: KFP API answered 404 Not Found: recurring run rr-9 not found\n"),
        (["runs", "list", "--experiment", "missing"], "error: No experiment is found with name missing.\n"),
    ],
)
def test_unknown_ids_are_one_error_line(kfp_server, argv: list[str], message: str) -> None:
    _, host = kfp_server
    code, out, err = _main([*argv, "--host", host])
    assert (code, out, err) == (2, "", message)


@pytest.mark.parametrize("command", [["runs", "list"], ["schedules", "list"]])
@pytest.mark.parametrize("size", ["0", "201"])
def test_page_size_is_checked_before_any_request(kfp_server, command: list[str], size: str) -> None:
    fake, host = kfp_server
    code, out, err = _main([*command, "--host", host, "--page-size", size])
    assert (code, out) == (2, "")
    assert err == f"error: --page-size must be an integer in 1-200, got {size}\n"
    assert fake.requests == []


def test_unreachable_host(monkeypatch) -> None:
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    code, out, err = _main(["schedules", "list", "--host", host])
    assert (code, out) == (2, "")
    assert err.startswith(f"error: cannot reach KFP at {host}: ") and err.count("\n") == 1


@pytest.mark.reliability("cli")
@pytest.mark.parametrize("command", [["schedules", "list"], ["runs", "get", "r1"], ["submit", "--data-uri", "gs://b/images", "--registry-uri", "gs://b/registry"]])
def test_a_host_that_is_not_a_kfp_api_is_one_line_at_once(monkeypatch, tmp_path, command) -> None:
    """A --host that answers 404 (here a plain file server) took kfp.Client 5 attempts 5 s apart,
    with 226 lines of logged tracebacks, and ended in "Failed getting healthz endpoint after 5
    attempts." without the URL."""
    import http.server
    import threading

    asked = []

    class FileServer(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def do_GET(self):
            asked.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    monkeypatch.delenv("KFP_TOKEN", raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FileServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        code, out, err = _main([*command, "--host", host])
    finally:
        server.shutdown()
        server.server_close()
    assert (code, out) == (2, "")
    assert err == (f"error: KFP at {host} did not answer its health call: {host}/apis/v2beta1/healthz answered 404 "
                   "File not found; --host must be the KFP API (the ml-pipeline-ui service, or ml-pipeline itself, "
                   "port-forwarded)\n")
    assert asked == ["/apis/v2beta1/healthz"]  # one health call, not kfp.Client's 5 attempts 5 s apart


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime.datetime(2026, 12, 4, 12, 0, 5, 999, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
         "2026-12-04T10:00:05Z"),
        (datetime.datetime(2026, 12, 4, 10, 0, 5), "2026-12-04T10:00:05Z"),
        (datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc), None),
        (None, None),
    ],
)
def test_utc_text(value, text) -> None:
    assert utc_text(value) == text
