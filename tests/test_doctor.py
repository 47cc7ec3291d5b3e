"""``kfp-finetune doctor``: each check passing and failing for real on this machine where it can
(a loopback KFP health endpoint, the GCS emulator, a dead Docker socket, the disk), and the exit
status following the checks that were asked for."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from gcs_emulator import gcs_emulator, new_bucket  # noqa: F401 (pytest fixture)
from pipelines import doctor
from pipelines.cli import main


@pytest.mark.parametrize("version, status", [("3.10.0", "ok"), ("3.13.5", "ok"), ("3.14.0", "fail"), ("3.9.18", "fail")])
def test_python_is_judged_against_requires_python(version, status):
    check = doctor.check_python(">=3.10,<3.14", version)
    assert (check.status, check.detail.startswith(f"Python {version} (requires >=3.10,<3.14)")) == (status, True)


def test_libraries_name_every_pin_that_is_not_met():
    installed = {"kfp": "2.17.3", "tensorflow": "2.20.0", "PyYAML": "6.0.2"}.get
    check = doctor.check_libraries(["kfp==2.17.3", "tensorflow==2.21.0", "PyYAML>=6,<7", "matplotlib==3.10.9"], installed)
    assert check.status == "fail"
    assert check.data["problems"] == ["tensorflow 2.20.0 (wants ==2.21.0)", "matplotlib missing (wants ==3.10.9)"]
    assert doctor.check_libraries(["kfp==2.17.3", "PyYAML>=6,<7"], installed).status == "ok"


def test_the_pins_come_from_the_source_trees_pyproject():
    requires_python, requirements, source = doctor._requirements()
    assert source.endswith("pyproject.toml") and requires_python == ">=3.10,<3.14"
    assert "tensorflow==2.21.0" in requirements and "matplotlib==3.10.9" in requirements


class _Health(http.server.BaseHTTPRequestHandler):
    answer = (200, b'{"commit_sha": "abc123", "multi_user": false}')
    seen: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        status, body = type(self).answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def kfp_health():
    """A loopback stand-in of the KFP API's health endpoint: ``(url, handler class)``."""
    _Health.answer, _Health.seen = (200, b'{"commit_sha": "abc123", "multi_user": false}'), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", _Health
    server.shutdown()
    server.server_close()


def test_a_kfp_host_that_answers_its_health_call_passes(kfp_health):
    url, handler = kfp_health
    check = doctor.check_kfp(url + "/", token="secret")
    assert check.status == "ok" and check.detail.startswith(f"{url}/apis/v2beta1/healthz answered 200 in ")
    assert check.detail.endswith("(abc123)")
    assert handler.seen == [("/apis/v2beta1/healthz", "Bearer secret")]


def test_a_kfp_host_that_errs_or_is_gone_fails(kfp_health):
    url, handler = kfp_health
    handler.answer = (503, b"{}")
    assert doctor.check_kfp(url).detail == f"{url}/apis/v2beta1/healthz answered 503 Service Unavailable"
    handler.answer = (200, b"<html>login</html>")
    assert "not JSON" in doctor.check_kfp(url).detail
    port = int(url.rsplit(":", 1)[1])
    dead = doctor.check_kfp(f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}", timeout=2)
    assert dead.status == "fail" and "cannot reach" in dead.detail


def test_the_command_exits_nonzero_when_an_asked_check_fails(kfp_health, tmp_path, capsys):
    url, handler = kfp_health
    handler.answer = (500, b"{}")
    code = main(["doctor", "--host", url, "--pipeline-root", str(tmp_path), "--min-free-gb", "0", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and "kfp" in report["failed"] and report["ok"] is False
    assert [c["name"] for c in report["checks"]] == ["python", "libraries", "gpu", "docker", "kfp", "gcs", "disk"]
    handler.answer = (200, b"{}")
    code = main(["doctor", "--host", url, "--pipeline-root", str(tmp_path), "--min-free-gb", "0"])
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("ok    kfp        ") for line in lines)
    assert "skip  gcs        no gs:// --registry-uri given" in lines
    failed = [line.split()[1] for line in lines if line.startswith("fail ")]
    assert code == (1 if failed else 0)


def test_docker_down_fails_only_when_asked(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    asked, unasked = doctor.check_docker(True), doctor.check_docker(False)
    assert (asked.status, unasked.status) == ("fail", "warn")
    assert asked.detail.startswith(f"no Docker daemon answers at unix://{tmp_path}/no-daemon.sock")


def test_docker_up_passes():
    check = doctor.check_docker(True)
    if check.status != "ok":
        pytest.skip(f"no Docker daemon here: {check.detail}")
    assert check.detail.startswith("Docker ") and check.data["version"]


def test_gcs_access_on_the_emulator(gcs_emulator):  # noqa: F811 (fixture)
    from components.storage import gcs_client

    bucket = new_bucket(gcs_emulator)
    empty = doctor.check_gcs(f"gs://{bucket}/registry")
    assert empty.status == "ok" and empty.detail.startswith(f"gs://{bucket}/registry is empty")
    gcs_client().bucket(bucket).blob("registry/m/1/metadata.json").upload_from_string("{}")
    assert doctor.check_gcs(f"gs://{bucket}/registry").detail.startswith(f"gs://{bucket}/registry has objects")
    missing = doctor.check_gcs("gs://no-such-bucket-here/registry")
    assert missing.status == "fail" and "bucket 'no-such-bucket-here'" in missing.detail


def test_gcs_without_credentials_fails(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    check = doctor.check_gcs("gs://bucket/registry")
    assert check.status == "fail" and check.detail.startswith("no Google Cloud credentials for gs://bucket/registry")


def test_disk_free_space_against_the_minimum(tmp_path):
    assert doctor.check_disk(str(tmp_path / "not" / "yet"), 0.0).status == "ok"
    short = doctor.check_disk(str(tmp_path), 1e9)
    assert short.status == "fail" and "at least 1e+09 GB wanted" in short.detail


def test_gpus_asked_for_but_not_seen_fail_with_the_reason():
    seen = doctor.check_gpu(0)
    assert seen.status in ("ok", "warn") and (seen.status == "ok") == bool(seen.data["gpus"])
    wanted = len(seen.data["gpus"]) + 1
    check = doctor.check_gpu(wanted)
    assert check.status == "fail" and f"{wanted}" in check.detail


def test_a_pipeline_root_not_there_yet_names_the_folder_measured(tmp_path):
    """``--pipeline-root /proc/nope`` read "0.0 GB free under /proc/nope", the free space of the
    nearest existing folder given as the path's own."""
    check = doctor.check_disk(str(tmp_path / "not" / "yet"), 0.0)
    assert check.detail.startswith(f"{check.data['free_gb']:.1f} GB free under {tmp_path / 'not' / 'yet'} (not there "
                                   f"yet: measured on {tmp_path}, the nearest folder that exists)")
    assert "not there yet" not in doctor.check_disk(str(tmp_path), 0.0).detail


def test_gpus_asked_for_on_a_machine_without_them_log_no_native_error_line(tmp_path):
    """The doctor's own line explains a missing GPU; TensorFlow's "E... failed call to cuInit"
    came out on stderr beside it (in a fresh process: the log level is set before TensorFlow loads)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "doctor", "--gpus", "1", "--pipeline-root", str(tmp_path),
                           "--min-free-gb", "0"], capture_output=True, text=True, timeout=300)
    gpu = [line for line in done.stdout.splitlines() if line.split()[1:2] == ["gpu"]]
    assert len(gpu) == 1
    if gpu[0].startswith("fail"):
        assert done.returncode == 1
        assert not [line for line in done.stderr.splitlines() if line[:1] in "EF" and line[1:5].isdigit()], done.stderr
