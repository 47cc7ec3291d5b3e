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
  service account, and a fixed bearer token (the emulator accepts any).

``environment()`` is the set of variables a process (or a ``docker run --network host`` container)
needs for both file systems to reach the emulator through the front.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import socket
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


def _through_front(location: str, emulator_url: str, host: str) -> str:
    """A ``Location`` the emulator wrote (its own URL, or ``http://<Google host>``) as ``https://<host>/...``."""
    parts = urllib.parse.urlsplit(location)
    if location.startswith(emulator_url) or (parts.scheme == "http" and parts.hostname in GOOGLE_HOSTS):
        return urllib.parse.urlunsplit(("https", host.split(":")[0], parts.path, parts.query, parts.fragment))
    return location


class _Forward(BaseHTTPRequestHandler):
    """Requests inside a CONNECT tunnel (after TLS): forwarded to the emulator."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # the emulator's own log is enough
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self) -> None:
        front: GcsFront = self.server.front  # type: ignore[attr-defined]
        body = self._body()
        # The Host header stays Google's: fake-gcs-server serves path-style downloads
        # (GET /<bucket>/<object>, what TensorFlow reads with) only for its public host.
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"expect"}}
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        target = urllib.parse.urlsplit(front.emulator_url)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        self.send_response(response.status, response.reason)
        for k, v in response.getheaders():
            if k.lower() in _HOP_BY_HOP or k.lower() == "content-length":
                continue
            if k.lower() == "location":  # e.g. a resumable upload's session URL: back through the front
                v = _through_front(v, front.emulator_url, self.headers.get("Host", GOOGLE_HOSTS[0]))
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

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
        content_type, text = _METADATA.get(path, ("text/plain", "ok" if path in ("/", "/computeMetadata/v1/") else None))
        body = (text or "not found").encode()
        self.send_response(200 if text is not None else 404)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class GcsFront:
    """The front, serving on ``127.0.0.1:<port>`` in a thread until ``close()``.

    Args:
        emulator_url: The GCS emulator, ``http://127.0.0.1:<port>``.
        folder: Where the certificate and key are written.
    """

    def __init__(self, emulator_url: str, folder: str) -> None:
        self.emulator_url = emulator_url.rstrip("/")
        self.ca_file, key_file = make_certificate(folder)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(self.ca_file, key_file)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Front)
        self._server.daemon_threads = True
        self._server.front = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="gcs-front", daemon=True)
        self._thread.start()

    def environment(self, ca_file: str | None = None) -> dict[str, str]:
        """Variables that point TensorFlow's and Beam's gs:// at the emulator through this front.

        Args:
            ca_file: Where the process sees the certificate (a container's mount point); default
                ``self.ca_file``.
        """
        here = f"127.0.0.1:{self.port}"
        return {
            "STORAGE_EMULATOR_HOST": self.emulator_url,
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
        self._server.shutdown()
        self._server.server_close()
