"""Open an HTML file in headless Chromium and report what it rendered and what it fetched.

The browser is driven through the Chrome DevTools Protocol over a pipe
(``--remote-debugging-pipe``: the browser reads commands on fd 3 and writes answers and events on
fd 4, each message JSON ended by a NUL byte), so no port and no websocket client is needed. While
the page loads, every ``Network.requestWillBeSent`` and ``Network.loadingFailed`` event, every
console or ``Log`` entry and every DevTools issue (where a Content-Security-Policy refusal is
reported) is recorded;
then the boxes of the page's ``<svg>`` elements are measured and each one is captured as a PNG.

Expressions sent with ``Runtime.evaluate`` run in the DevTools' own world, which the page's
Content-Security-Policy does not restrict (it forbids the page's own scripts).

``chromium_binary()`` finds the browser; tests skip with its reason when there is none.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MISSING_REASON = "no headless Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"

_MEASURE_SVGS = """
JSON.stringify(Array.from(document.querySelectorAll('svg')).filter(s => !s.parentElement.closest('svg')).map(s => {
  const r = s.getBoundingClientRect();
  return {chart: s.getAttribute('data-chart'), x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width,
          height: r.height, shapes: s.querySelectorAll('path, use, rect, text, image').length};
}))
"""


def chromium_binary() -> str | None:
    """The first of ``CANDIDATES`` on ``PATH``, or None."""
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


@dataclasses.dataclass
class PageVisit:
    """What one visit of a page showed.

    Attributes:
        url: The page's ``file://`` URL.
        requests: URL of every request the page made (``Network.requestWillBeSent``), the page's
            own document included, in order.
        failed: ``(url, error text, blocked reason or "")`` per ``Network.loadingFailed``.
        log: ``(level, text)`` of every console and ``Log`` entry.
        issues: ``(code, details)`` of every DevTools issue (``Audits.issueAdded``): Chromium
            reports a Content-Security-Policy refusal there (``ContentSecurityPolicyIssue``).
        svgs: Per top-level ``<svg>``: ``chart`` (its ``data-chart``), ``x``, ``y``, ``width``,
            ``height`` (CSS pixels, in the document), ``shapes`` (drawn elements inside), and
            ``ink`` (share of the captured box's pixels that are not white, in [0, 1]).
        screenshot: The whole page as PNG bytes.
    """

    url: str
    requests: list[str]
    failed: list[tuple[str, str, str]]
    log: list[tuple[str, str]]
    issues: list[tuple[str, str]]
    svgs: list[dict[str, Any]]
    screenshot: bytes


class _Pipe:
    """The DevTools protocol over the browser's fds 3 and 4."""

    def __init__(self, binary: str, profile: str) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire() -> None:
            # The browser expects the pipe ends at exactly fd 3 and 4; copied to high numbers
            # first, so that neither end is overwritten when it already sits at 3 or 4.
            high_r, high_w = os.dup2(to_browser_r, 100), os.dup2(from_browser_w, 101)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--window-size=1000,1000", f"--user-data-dir={profile}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire, pass_fds=(3, 4),  # kept open when close_fds runs, after wire()
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            if not select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("headless Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"headless Chromium closed its DevTools pipe (exit status {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0) -> dict:
        """Sends one command and returns its ``result``; events read meanwhile go to ``events``."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"DevTools {method} failed: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        """Returns the first event ``method`` (already read or coming)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5.0)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def _ink(png: bytes) -> float:
    """Share of a PNG's pixels that are not (near) white."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    return float((pixels < 245).mean()) if pixels.size else 0.0


def visit(path: str, binary: str, settle_s: float = 0.5) -> PageVisit:
    """Loads ``path`` in a fresh headless Chromium profile and records the visit.

    Args:
        path: An HTML file.
        binary: The browser (``chromium_binary()``).
        settle_s: Seconds to keep listening after the load event, for late requests.

    Raises:
        TimeoutError: the browser did not answer or the page did not load within 30 s.
        RuntimeError: the browser exited or refused a command.
    """
    url = "file://" + os.path.abspath(path)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        pipe = _Pipe(binary, profile)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Network", "Page", "Log", "Runtime", "Audits"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.events.clear()  # about:blank's own events
            pipe.call("Page.navigate", {"url": url}, session=session)
            pipe.wait_for("Page.loadEventFired")
            time.sleep(settle_s)
            svgs = json.loads(pipe.call("Runtime.evaluate", {"expression": _MEASURE_SVGS, "returnByValue": True},
                                        session=session)["result"]["value"])
            for svg in svgs:
                shot = pipe.call("Page.captureScreenshot", {
                    "format": "png", "captureBeyondViewport": True,
                    "clip": {"x": svg["x"], "y": svg["y"], "width": max(svg["width"], 1), "height": max(svg["height"], 1),
                             "scale": 1},
                }, session=session)
                svg["ink"] = _ink(base64.b64decode(shot["data"]))
            screenshot = base64.b64decode(pipe.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                                    session=session)["data"])
        finally:
            pipe.close()
    events = [e for e in pipe.events if e.get("method")]
    return PageVisit(
        url=url,
        requests=[e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"],
        failed=[(e["params"].get("requestId", ""), e["params"].get("errorText", ""), e["params"].get("blockedReason", ""))
                for e in events if e["method"] == "Network.loadingFailed"],
        log=[(e["params"]["entry"]["level"], e["params"]["entry"]["text"]) for e in events if e["method"] == "Log.entryAdded"]
        + [(e["params"]["type"], " ".join(str(a.get("value", a.get("description", ""))) for a in e["params"]["args"]))
           for e in events if e["method"] == "Runtime.consoleAPICalled"],
        issues=[(e["params"]["issue"]["code"], json.dumps(e["params"]["issue"].get("details", {})))
                for e in events if e["method"] == "Audits.issueAdded"],
        svgs=svgs,
        screenshot=screenshot,
    )
