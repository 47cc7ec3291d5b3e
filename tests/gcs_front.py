"""A front for the GCS emulator that TensorFlow's and Beam's gs:// file systems (and worker
containers) reach as if it were Google: an HTTPS forward proxy and a fake GCE metadata server.

Why: ``tf.io.gfile`` ignores ``STORAGE_EMULATOR_HOST`` (TF 2.21 always calls
``https://storage.googleapis.com`` and ``https://www.googleapis.com``), but its libcurl honours
``HTTPS_PROXY`` and ``CURL_CA_BUNDLE``, and ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` makes it skip the
metadata-server login. Beam's ``GCSFileSystem`` does honour ``STORAGE_EMULATOR_HOST``, but it
first looks for Google credentials with retries (about 21 s per process where there are none);
answering as a GCE metadata server (``GCE_METADATA_HOST``/``GCE_METADATA_IP``) gives it a token at
once. So the front:

* answers ``CONNECT storage.googleapis.com:443`` / ``www.googleapis.com:443`` (and nothing else:
  other hosts get 403), terminates TLS with a self-signed certificate made here with
  ``cryptography`` (``ca_file``: give it to clients as ``CURL_CA_BUNDLE``), and forwards each
  request to the emulator, rewriting the emulator's own URL in ``Location`` headers;
* answers plain ``GET /computeMetadata/v1/...`` as a metadata server: project ``emulator``, a
  service account, and a fixed bearer token (the emulator accepts any);
* relays every other plain request to the emulator (``STORAGE_EMULATOR_HOST`` points at the
  front), and serves JSON-API batches (``POST /batch/storage/v1``) itself, one sub-request at a
  time: fake-gcs-server has no batch endpoint, and Beam's GCS file system copies and deletes in
  batches (its file sinks rename their temporary files that way);
* answers ``GET /storage/v1/b/<bucket>/storageLayout`` (a flat namespace), which TensorFlow asks
  before renaming a folder (tf.Transform publishes its transform graph that way) and
  fake-gcs-server lacks.

``environment()`` is the set of variables a process (or a ``docker run --network host`` container)
needs for both file systems to reach the emulator through the front.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import socket
import ssl
import types
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_STORAGE_LAYOUT = re.compile(r"^/storage/v1/b/([^/]+)/storageLayout$")
GOOGLE_HOSTS = ("storage.googleapis.com", "www.googleapis.com")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate"}
_METADATA = {
    "/computeMetadata/v1/project/project-id": ("text/plain", "emulator"),
    "/computeMetadata/v1/project/numeric-project-id": ("text/plain", "1"),
    "/computeMetadata/v1/instance/service-accounts/default/email": ("text/plain", "tests@emulator.iam.gserviceaccount.com"),
    "/computeMetadata/v1/instance/service-accounts/default/": ("application/json", json.dumps({
        "aliases": ["default"], "email": "tests@emulator.iam.gserviceaccount.com",
        "scopes": ["https://www.googleapis.com/auth/cloud-platform"]})),
    "/computeMetadata/v1/instance/service-accounts/default/token": ("application/json", json.dumps({
        "access_token": "emulator-token", "expires_in": 3600, "token_type": "Bearer"})),
}


def make_certificate(folder: str) -> tuple[str, str]:
    """Writes a self-signed certificate for ``GOOGLE_HOSTS`` (it is its own CA) and its key.

    Returns:
        ``(certificate PEM path, key PEM path)`` inside ``folder``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kfp-finetune test GCS front")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in GOOGLE_HOSTS]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(folder, "gcs-front-ca.pem"), os.path.join(folder, "gcs-front-key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(cert_path, 0o644)  # read by the worker containers' non-root user
    return cert_path, key_path


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while handler.rfile.readline().strip():
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _send(emulator_url: str, method: str, path: str, headers: dict[str, str], body: bytes):
    """One request to the emulator: ``(status, reason, headers, body)``."""
    target = urllib.parse.urlsplit(emulator_url)
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
    try:
        if body or method in ("POST", "PUT", "PATCH"):
            headers = {**headers, "Content-Length": str(len(body))}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.reason, response.getheaders(), response.read()
    finally:
        conn.close()


def _batch(emulator_url: str, content_type: str, body: bytes) -> tuple[str, bytes]:
    """A JSON-API batch (``POST /batch/storage/v1``, multipart/mixed of HTTP requests), which
    fake-gcs-server lacks and Beam's GCS file system uses to copy and delete (its file sinks
    rename their temporary files that way): each part sent on its own, answered in one
    multipart/mixed response. Returns ``(content type, body)``."""
    import email.parser

    message = email.parser.BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    boundary = "batch_front_boundary"
    out = []
    for part in message.get_payload():
        inner = part.get_payload(decode=False)
        inner = inner if isinstance(inner, str) else inner[0].as_string()
        head, _, sub_body = inner.replace("\r\n", "\n").partition("\n\n")
        request_line, *header_lines = head.strip("\n").split("\n")
        method, path, _ = request_line.split(" ", 2)
        headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
        status, reason, resp_headers, data = _send(emulator_url, method, urllib.parse.urlsplit(path).path + (
            "?" + urllib.parse.urlsplit(path).query if urllib.parse.urlsplit(path).query else ""),
            {k: v for k, v in headers.items() if k.lower() != "content-length"}, sub_body.encode())
        content_id = part.get("Content-ID", "").strip("<>")
        kept = "".join(f"{k}: {v}\r\n" for k, v in resp_headers if k.lower() in ("content-type", "etag"))
        out.append(f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <response-{content_id}>\r\n\r\n"
                   f"HTTP/1.1 {status} {reason}\r\n{kept}Content-Length: {len(data)}\r\n\r\n{data.decode()}\r\n")
    out.append(f"--{boundary}--\r\n")
    return f"multipart/mixed; boundary={boundary}", "".join(out).encode()


def _relay(handler: BaseHTTPRequestHandler, front: types.SimpleNamespace, public: str) -> None:
    """Forwards ``handler``'s request to the emulator and writes its answer back; ``Location``
    headers point back at ``public`` (the front as the client sees it)."""
    body = _read_body(handler)
    layout = _STORAGE_LAYOUT.match(urllib.parse.urlsplit(handler.path).path) if handler.command == "GET" else None
    if handler.command == "POST" and handler.path.startswith("/batch/"):
        content_type, data = _batch(front.emulator_url, handler.headers.get("Content-Type", ""), body)
        status, reason, headers = 200, "OK", [("Content-Type", content_type)]
    elif layout:
        # TensorFlow asks before renaming a folder (hierarchical namespace or not); fake-gcs-server
        # has no such endpoint. The bucket's own answer decides 200 or 404.
        status, reason, headers, data = _send(front.emulator_url, "GET", f"/storage/v1/b/{layout.group(1)}", {}, b"")
        if status == 200:
            data = json.dumps({"kind": "storage#storageLayout", "bucket": urllib.parse.unquote(layout.group(1)),
                               "location": "US", "locationType": "multi-region",
                               "hierarchicalNamespace": {"enabled": False}}).encode()
            headers = [("Content-Type", "application/json")]
    else:
        # The Host header stays as sent: fake-gcs-server serves path-style downloads
        # (GET /<bucket>/<object>, what TensorFlow reads with) only for its public host.
        sent = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP | {"expect", "content-length"}}
        status, reason, headers, data = _send(front.emulator_url, handler.command, handler.path, sent, body)
    handler.send_response(status, reason)
    for k, v in headers:
        if k.lower() in _HOP_BY_HOP or k.lower() == "content-length":
            continue
        if k.lower() == "location":  # e.g. a resumable upload's session URL: back through the front
            v = _through_front(v, front.emulator_url, public)
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


def _through_front(location: str, emulator_url: str, public: str) -> str:
    """A ``Location`` the emulator wrote (its own URL, or ``http://<Google host>``) as a URL at
    ``public`` (``https://<Google host>`` inside a tunnel, the front's own URL outside)."""
    parts = urllib.parse.urlsplit(location)
    if location.startswith(emulator_url) or (parts.scheme == "http" and parts.hostname in GOOGLE_HOSTS):
        base = urllib.parse.urlsplit(public)
        return urllib.parse.urlunsplit((base.scheme, base.netloc, parts.path, parts.query, parts.fragment))
    return location


class _Forward(BaseHTTPRequestHandler):
    """Requests inside a CONNECT tunnel (after TLS): forwarded to the emulator."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # the emulator's own log is enough
        pass

    def _forward(self) -> None:
        front = self.server.front  # type: ignore[attr-defined]
        _relay(self, front, public=f"https://{self.headers.get('Host', GOOGLE_HOSTS[0]).split(':')[0]}")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward


class _Front(BaseHTTPRequestHandler):
    """The front's own port: CONNECT tunnels to Google's hosts, and the metadata server."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_CONNECT(self) -> None:
        host = self.path.rsplit(":", 1)[0]
        if host not in GOOGLE_HOSTS:
            self.send_error(403, f"the GCS front tunnels only to {', '.join(GOOGLE_HOSTS)}, not {host}")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        try:
            tls = self.server.front.tls.wrap_socket(self.connection, server_side=True)  # type: ignore[attr-defined]
            _Forward(tls, self.client_address, self.server)
        except (ssl.SSLError, ConnectionError, socket.timeout):
            pass  # the client went away; its own error says why
        self.close_connection = True

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if not (path == "/" or path.startswith("/computeMetadata/")):
            self._relay()
            return
        content_type, text = _METADATA.get(path, ("text/plain", "ok" if path in ("/", "/computeMetadata/v1/") else None))
        body = (text or "not found").encode()
        self.send_response(200 if text is not None else 404)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _relay(self) -> None:
        """The emulator's own API on this port (``STORAGE_EMULATOR_HOST`` points here), with batches."""
        front = self.server.front  # type: ignore[attr-defined]
        _relay(self, front, public=front.url)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _relay


class GcsFront:
    """The front, serving on ``127.0.0.1:<port>`` from a child process until ``close()``.

    Why a child process: TensorFlow holds Python's GIL through some of its C++ calls that read
    gs:// (e.g. ``NewCheckpointReader`` when loading a SavedModel's variables); a front served by a
    thread of the same process could then never answer, and the load would wait forever.

    Args:
        emulator_url: The GCS emulator, ``http://127.0.0.1:<port>``.
        folder: Where the certificate and key are written.

    Raises:
        RuntimeError: the child did not report its port within 30 s (with its output).
    """

    def __init__(self, emulator_url: str, folder: str) -> None:
        import subprocess
        import sys

        self.emulator_url = emulator_url.rstrip("/")
        self.ca_file, key_file = make_certificate(folder)
        self._process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), self.emulator_url, self.ca_file, key_file],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        line = self._process.stdout.readline().strip()
        if not line.startswith("port "):
            self._process.kill()
            raise RuntimeError(f"the GCS front did not start: {line}{self._process.stdout.read()[-2000:]}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def environment(self, ca_file: str | None = None) -> dict[str, str]:
        """Variables that point TensorFlow's and Beam's gs:// at the emulator through this front.

        Args:
            ca_file: Where the process sees the certificate (a container's mount point); default
                ``self.ca_file``.
        """
        here = f"127.0.0.1:{self.port}"
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "HTTPS_PROXY": f"http://{here}",
            "https_proxy": f"http://{here}",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "CURL_CA_BUNDLE": ca_file or self.ca_file,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator-token",
            "GCE_METADATA_HOST": here,
            "GCE_METADATA_IP": here,
            "GOOGLE_CLOUD_PROJECT": "emulator",
        }

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except Exception:  # noqa: BLE001 (it must go whatever the reason)
            self._process.kill()
            self._process.wait()


def _serve(emulator_url: str, ca_file: str, key_file: str) -> None:
    """The child process: serves until terminated, after printing ``port <n>``."""
    front = types.SimpleNamespace(emulator_url=emulator_url, tls=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    front.tls.load_cert_chain(ca_file, key_file)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Front)
    server.daemon_threads = True
    front.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.front = front  # type: ignore[attr-defined]
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    import sys

    _serve(*sys.argv[1:4])
