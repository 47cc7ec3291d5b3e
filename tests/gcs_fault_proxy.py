"""A loopback HTTP proxy in front of the GCS emulator that injects transient faults (429, 503).

Point ``STORAGE_EMULATOR_HOST`` at :attr:`FaultProxy.url` and the real ``google-cloud-storage``
client talks to the emulator through it. Every ``every``-th request gets a fault, cycling through
``kinds``:

* ``"429"`` and ``"503"``: answered at once with that status; the emulator never sees the request.
* ``"503-after"``: forwarded, so the emulator does the work, then answered 503 anyway: the case
  where a client retries a request that had in fact succeeded.

A fault never falls on two requests in a row (``every`` >= 2), so each retry goes through. With
``only``, faults are scheduled among the matching requests alone (e.g. alias compare-and-swaps).
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable

# Headers that belong to one connection, not to the message (RFC 9110, section 7.6.1).
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "content-length", "host"}
KINDS = ("429", "503", "503-after")


class FaultProxy:
    """A started proxy; call :meth:`close` when done.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        requests: Every request seen, as ``(method, path with query, fault kind or None)``.
    """

    def __init__(
        self, upstream: str, every: int = 2, kinds: tuple[str, ...] = KINDS,
        only: Callable[[str, str], bool] | None = None,
    ) -> None:
        if every < 2:
            raise ValueError("every must be >= 2, so that a retry is not faulted again")
        target = urllib.parse.urlparse(upstream)
        self._upstream = (target.hostname, target.port)
        self._every, self._kinds, self._only = every, kinds, only
        self._lock = threading.Lock()
        self._matching = 0
        self.requests: list[tuple[str, str, str | None]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle's algorithm each answer would
            # wait for the client's delayed ACK (about 40 ms).
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:  # quiet test output
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A client closing its idle keep-alive connection is not an error worth a traceback.
        self._server.handle_error = lambda request, client_address: None
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def faults(self, kind: str | None = None) -> list[tuple[str, str, str | None]]:
        """The faulted requests (of one kind, if given)."""
        return [r for r in self.requests if r[2] is not None and (kind is None or r[2] == kind)]

    def _next_fault(self, method: str, path: str) -> str | None:
        with self._lock:
            fault = None
            if self._only is None or self._only(method, path):
                n = self._matching
                self._matching += 1
                if n % self._every == self._every - 1:
                    fault = self._kinds[(n // self._every) % len(self._kinds)]
            self.requests.append((method, path, fault))
            return fault

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = _read_body(handler)
        fault = self._next_fault(handler.command, handler.path)
        if fault in ("429", "503"):
            _answer(handler, int(fault), {}, _error_body(int(fault)))
            return
        status, headers, data = self._forward(handler, body)
        if fault == "503-after":
            _answer(handler, 503, {}, _error_body(503))
            return
        _answer(handler, status, headers, data)

    def _forward(self, handler: http.server.BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=30)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
            connection.request(handler.command, handler.path, body=body if body or handler.command in ("POST", "PUT", "PATCH") else None,
                               headers=headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}, data
        finally:
            connection.close()


def _read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _error_body(status: int) -> bytes:
    return json.dumps({"error": {"code": status, "message": f"injected by the test proxy ({status})"}}).encode()


def _answer(handler: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    if "content-type" not in {k.lower() for k in headers}:
        handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)
