"""A loopback stand-in of the KFP v2beta1 REST API, for the tests of the cluster commands.

No KFP API server can run here, so the real ``kfp.Client`` (kfp 2.17.3) talks to this small HTTP
server on 127.0.0.1; the real path is tested against a cluster behind the ``cluster`` marker.
``kfp_server`` is a pytest fixture (import it into a test module) yielding ``(fake, host)``;
``fake.requests`` records every request (method, path, query, headers, JSON body, or the parts
of a multipart upload), and the fake keeps what was created so later requests see it.

Paths served, as called by kfp/client/client.py through kfp_server_api (all under
``/apis/v2beta1``):

* ``GET healthz``; ``GET|POST experiments`` (by name: ``filter``)
* ``GET|POST pipelines`` (by name: ``filter``; create answers 409 for a taken name)
* ``GET pipelines/{id}/versions`` (by name: ``filter``), ``POST pipelines/upload_version``
  (multipart; 409 for a taken version name)
* ``GET|POST runs`` (list: ``experiment_id``, ``page_size``, ``page_token``, ``sort_by``),
  ``GET runs/{id}``, ``POST runs/{id}:terminate``
* ``GET|POST recurringruns``, ``GET|DELETE recurringruns/{id}``, ``POST recurringruns/{id}:enable|:disable``

Unknown ids answer 404 with KFP's error body. ``fake.fail[(method, path)] = (status, message)``
makes a path answer an error; ``fake.stale_lists["pipelines"|"versions"] = n`` makes the next
``n`` lookups by name answer "none" although the item exists, as a lookup that ran just before
another client created it would (the race that the conflict handling must survive).
"""

# No "from __future__ import annotations": see tiny_pipeline.py.
import datetime
import email.parser
import email.policy
import http.server
import json
import os
import threading
import urllib.parse
from typing import Any

import pytest
import yaml

API = "/apis/v2beta1"
# Creation times are a clock that ticks one minute per created item, so "newest first" is testable.
CLOCK_START = datetime.datetime(2026, 12, 4, 10, 0, 0, tzinfo=datetime.timezone.utc)


def _not_found(what: str) -> tuple[int, dict]:
    return 404, {"error": f"{what} not found", "code": 5, "message": f"{what} not found"}


def _conflict(what: str) -> tuple[int, dict]:
    return 409, {"error": f"{what} already exists", "code": 6, "message": f"{what} already exists"}


def _wanted_name(query: dict[str, list[str]]) -> str | None:
    if "filter" not in query:
        return None
    return json.loads(query["filter"][0])["predicates"][0]["stringValue"]


def _multipart(content_type: str, body: bytes) -> dict[str, Any]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    return {
        part.get_param("name", header="content-disposition"): {
            "filename": part.get_filename(),
            "data": part.get_payload(decode=True),
        }
        for part in message.iter_parts()
    }


class FakeKfp:
    """Records every request and answers like the KFP v2beta1 API for the paths above."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring: dict[str, dict[str, Any]] = {}
        # States a run created through POST /runs goes through, one per GET; the last repeats.
        self.run_states: list[str] = ["PENDING"]
        self.fail: dict[tuple[str, str], tuple[int, str]] = {}
        self.stale_lists: dict[str, int] = {"pipelines": 0, "versions": 0}
        self._ticks = 0
        self._lock = threading.Lock()

    def calls(self, method: str, path: str) -> list[dict[str, Any]]:
        """The recorded requests of one method and path (``path`` with or without ``/apis/v2beta1``)."""
        full = path if path.startswith(API) else f"{API}/{path.lstrip('/')}"
        return [r for r in self.requests if r["method"] == method and r["path"] == full]

    def _now(self) -> str:
        self._ticks += 1
        return (CLOCK_START + datetime.timedelta(minutes=self._ticks)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def add_run(self, run_id: str, **fields: Any) -> dict[str, Any]:
        """Stores a run as the server would return it; ``created_at`` ticks the clock."""
        run = {"run_id": run_id, "created_at": self._now(), "state": "SUCCEEDED", **fields}
        self.runs[run_id] = run
        return run

    def add_recurring(self, recurring_run_id: str, **fields: Any) -> dict[str, Any]:
        """Stores a recurring run as the server would return it."""
        now = self._now()
        item = {"recurring_run_id": recurring_run_id, "created_at": now, "updated_at": now, "status": "ENABLED", **fields}
        self.recurring[recurring_run_id] = item
        return item

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        parsed = urllib.parse.urlsplit(raw_path)
        path, query = parsed.path, urllib.parse.parse_qs(parsed.query)
        content_type = headers.get("content-type", "")
        if body and content_type.startswith("multipart/form-data"):
            payload: Any = _multipart(content_type, body)
        else:
            payload = json.loads(body) if body else None
        with self._lock:
            self.requests.append({"method": method, "path": path, "query": query, "headers": headers, "body": payload})
            if (method, path) in self.fail:
                status, message = self.fail[(method, path)]
                return status, {"error": message, "code": 3, "message": message}
            if not path.startswith(API + "/"):
                return _not_found(path)
            route = path[len(API) + 1 :]
            for prefix, handler in (
                ("healthz", self._healthz),
                ("experiments", self._experiments),
                ("pipelines", self._pipelines),
                ("runs", self._runs),
                ("recurringruns", self._recurring_runs),
            ):
                if route == prefix or route.startswith(prefix + "/"):
                    return handler(method, route[len(prefix) + 1 :], query, payload)
            return _not_found(path)

    def _healthz(self, method: str, rest: str, query: dict, payload: Any) -> tuple[int, dict]:
        return 200, {"multi_user": False}

    def _experiments(self, method: str, rest: str, query: dict, payload: Any) -> tuple[int, dict]:
        if method == "GET" and not rest:
            wanted = _wanted_name(query)
            found = [e for e in self.experiments.values() if e["display_name"] == wanted]
            return 200, ({"experiments": found, "total_size": len(found)} if found else {})
        if method == "POST" and not rest:
            experiment = {**payload, "experiment_id": f"exp-{len(self.experiments) + 1}"}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        return _not_found(f"experiment {rest}")

    def _stale(self, kind: str) -> bool:
        if self.stale_lists[kind] > 0:
            self.stale_lists[kind] -= 1
            return True
        return False

    def _pipelines(self, method: str, rest: str, query: dict, payload: Any) -> tuple[int, dict]:
        if method == "GET" and not rest:
            wanted, namespace = _wanted_name(query), query.get("namespace", [None])[0]
            found = [p for p in self.pipelines.values() if p["display_name"] == wanted and p.get("namespace") == namespace]
            if self._stale("pipelines"):
                found = []
            return 200, ({"pipelines": found, "total_size": len(found)} if found else {})
        if method == "POST" and not rest:
            if any(p["display_name"] == payload["display_name"] and p.get("namespace") == payload.get("namespace")
                   for p in self.pipelines.values()):
                return _conflict(f"pipeline {payload['display_name']}")
            pipeline = {**payload, "pipeline_id": f"pl-{len(self.pipelines) + 1}", "created_at": self._now()}
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            return 200, pipeline
        if method == "POST" and rest == "upload_version":
            return self._upload_version(query, payload)
        pipeline_id, _, tail = rest.partition("/")
        if method == "GET" and tail == "versions":
            if pipeline_id not in self.pipelines:
                return _not_found(f"pipeline {pipeline_id}")
            wanted = _wanted_name(query)
            found = [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id
                     and (wanted is None or v["display_name"] == wanted)]
            if self._stale("versions"):
                found = []
            return 200, ({"pipeline_versions": found, "total_size": len(found)} if found else {})
        return _not_found(f"pipeline path {rest}")

    def _upload_version(self, query: dict, parts: dict[str, Any]) -> tuple[int, dict]:
        pipeline_id, name = query["pipelineid"][0], query["name"][0]
        if pipeline_id not in self.pipelines:
            return _not_found(f"pipeline {pipeline_id}")
        if any(v["pipeline_id"] == pipeline_id and v["name"] == name for v in self.versions.values()):
            return _conflict(f"pipeline version {name}")
        upload = parts["uploadfile"]
        documents = list(yaml.safe_load_all(upload["data"]))
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": f"pv-{len(self.versions) + 1}",
            "name": name,
            "display_name": name,
            "description": query.get("description", [""])[0],
            "created_at": self._now(),
            "pipeline_spec": documents[0],
            # KFP keeps a package's second YAML document (kfp-kubernetes' platform spec) with it.
            "platform_spec": documents[1] if len(documents) > 1 else None,
            "filename": upload["filename"],
        }
        self.versions[version["pipeline_version_id"]] = version
        return 200, version

    def _page(self, items: list[dict], key: str, query: dict) -> tuple[int, dict]:
        if query.get("sort_by", [""])[0] == "created_at desc":
            items = sorted(items, key=lambda item: item["created_at"], reverse=True)
        start = int(query.get("page_token", ["0"])[0] or 0)
        size = int(query.get("page_size", ["20"])[0])
        page = items[start : start + size]
        answer: dict[str, Any] = {"total_size": len(items)}
        if page:
            answer[key] = page
        if start + size < len(items):
            answer["next_page_token"] = str(start + size)
        return 200, answer

    def _runs(self, method: str, rest: str, query: dict, payload: Any) -> tuple[int, dict]:
        if method == "POST" and not rest:
            run_id = f"run-{len(self.runs) + 1}"
            # Stored without a state: GET answers from run_states, as a run the server advances.
            self.runs[run_id] = {**payload, "run_id": run_id, "created_at": self._now(), "state": None}
            return 200, {**self.runs[run_id], "state": "PENDING"}
        if method == "GET" and not rest:
            experiment = query.get("experiment_id", [None])[0]
            items = [r for r in self.runs.values() if experiment is None or r.get("experiment_id") == experiment]
            return self._page([self._run_view(r) for r in items], "runs", query)
        run_id, _, verb = rest.partition(":")
        if run_id not in self.runs:
            return _not_found(f"run {run_id}")
        if method == "GET" and not verb:
            return 200, self._run_view(self.runs[run_id])
        if method == "POST" and verb == "terminate":
            self.runs[run_id]["state"] = "CANCELING"
            return 200, {}
        return _not_found(f"run path {rest}")

    def _run_view(self, run: dict[str, Any]) -> dict[str, Any]:
        if run["state"] is not None:
            return run
        state = self.run_states.pop(0) if len(self.run_states) > 1 else self.run_states[0]
        return {**run, "state": state}

    def _recurring_runs(self, method: str, rest: str, query: dict, payload: Any) -> tuple[int, dict]:
        if method == "POST" and not rest:
            item = self.add_recurring(f"rr-{len(self.recurring) + 1}", **payload)
            return 200, item
        if method == "GET" and not rest:
            experiment = query.get("experiment_id", [None])[0]
            items = [r for r in self.recurring.values() if experiment is None or r.get("experiment_id") == experiment]
            # KFP's proto names this field recurringRuns (camelCase), and so does its JSON.
            return self._page(items, "recurringRuns", query)
        item_id, _, verb = rest.partition(":")
        if item_id not in self.recurring:
            return _not_found(f"recurring run {item_id}")
        if method == "GET" and not verb:
            return 200, self.recurring[item_id]
        if method == "DELETE" and not verb:
            del self.recurring[item_id]
            return 200, {}
        if method == "POST" and verb in ("enable", "disable"):
            item = self.recurring[item_id]
            item.update(status="ENABLED" if verb == "enable" else "DISABLED", mode=verb.upper(), updated_at=self._now())
            return 200, {}
        return _not_found(f"recurring run path {rest}")


def _handler_for(fake: FakeKfp) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, payload = fake.handle(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

    return Handler


@pytest.fixture
def kfp_server(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Yields ``(fake, host)`` for a KFP stand-in on a free loopback port."""
    import kfp.client.client as kfp_client

    # A developer's ~/.config/kfp/context.json (namespace, cookies) or KF_PIPELINES_* variables
    # would change what kfp.Client sends.
    monkeypatch.setattr(kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "no-context.json"))
    for name in list(os.environ):
        if name.startswith("KF_PIPELINES_") or name == "KFP_TOKEN":
            monkeypatch.delenv(name)
    fake = FakeKfp()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
