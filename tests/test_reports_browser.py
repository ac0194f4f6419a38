"""report.html in headless Chromium (Debian ``chromium``): it loads offline with no console
error and no network request, draws every chart, links the timelines' zoom, a planted
``<script>`` does not run, and the test saves a full-page screenshot.

Chromium is driven over the DevTools protocol on ``--remote-debugging-pipe`` (fds 3 and 4,
NUL-separated JSON), so nothing listens on a port and no extra library is needed. Every wait
is bounded; the browser is closed and, failing that, killed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_reports_fixtures import failing_run, no_metrics_run

from aichaos.reports.render import render_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH = 1400
# schemes a self-contained page may load from; anything else is a network request
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome-error:")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium not installed")


class Browser:
    """Headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path, timeout: float = 30.0):
        self.timeout = timeout
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()

        def wire_pipes() -> None:  # in the child: the protocol expects fds 3 (in) and 4 (out)
            a, b = os.dup(cmd_r), os.dup(out_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--hide-scrollbars",
                "--mute-audio",
                # no name resolves: a request that slipped through still goes nowhere
                "--host-resolver-rules=MAP * ~NOTFOUND",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes,
            close_fds=False,  # fds 3 and 4 must reach chromium; ours are close-on-exec
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        reply = self._read_until(lambda m: m.get("id") == message["id"])
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str) -> dict:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        return self._read_until(lambda m: m.get("method") == method, keep=False)

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        return result.get("result", {}).get("value")

    def poll(self, expression: str, limit: float = 20.0) -> Any:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        return self.evaluate(expression)

    def _read_until(self, match, keep: bool = True) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if match(message):
                    return message
                if "method" in message:
                    self.events.append(message)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self._out_r], [], [], left)
            if ready:
                chunk = os.read(self._out_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk

    def open_page(self) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.send(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            session=False,
        )
        self.session = attached["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable")
        self.send(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
        )

    def load(self, path: Path) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": path.resolve().as_uri()})
        self.wait_event("Page.loadEventFired")

    def problems(self) -> tuple[list[str], list[str]]:
        """Console errors and exceptions; requests to anything but the page's own file."""
        self._drain()
        errors, requests = [], []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(json.dumps(params.get("args"))[:300])
            elif method == "Runtime.exceptionThrown":
                errors.append(json.dumps(params.get("exceptionDetails"))[:300])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append(params["entry"].get("text", "")[:300])
            elif method == "Network.requestWillBeSent":
                url = params.get("request", {}).get("url", "")
                if not url.startswith(LOCAL_SCHEMES):
                    requests.append(url)
        return errors, requests

    def _drain(self) -> None:
        """Collect events already sent, without waiting for more."""
        while select.select([self._out_r], [], [], 0.2)[0]:
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                break
            self._buffer += chunk
        while b"\0" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\0", 1)
            message = json.loads(raw)
            if "method" in message:
                self.events.append(message)

    def screenshot(self, path: Path) -> None:
        metrics = self.send("Page.getLayoutMetrics")
        height = int(metrics["cssContentSize"]["height"])
        shot = self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1},
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", session=False)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self._cmd_w)
        os.close(self._out_r)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        b.open_page()
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("browser-runs")
    runs = {"failing": failing_run(base / "failing"), "no_metrics": no_metrics_run(base / "nm")}
    for run in runs.values():
        render_run(run, ["html"])
    return {name: run / "report.html" for name, run in runs.items()}


def _plots(browser: Browser) -> int:
    return browser.evaluate("document.querySelectorAll('.plot').length")


def test_report_loads_offline_draws_every_chart_and_runs_no_planted_script(
    browser: Browser, reports: dict[str, Path], tmp_path: Path
) -> None:
    browser.load(reports["failing"])
    plots = _plots(browser)
    figures = browser.evaluate(
        "Object.keys(JSON.parse(document.getElementById('chart-data').textContent).figures).length"
    )
    assert plots == figures >= 13  # timelines, server panels, CDFs
    drawn = browser.poll(
        f"document.querySelectorAll('.plot[data-drawn]').length === {plots} && {plots}"
    )
    assert drawn == plots
    assert browser.evaluate("document.querySelectorAll('.plot .main-svg').length") >= plots
    # the planted scripts stayed text
    assert browser.evaluate("typeof window.__planted") == "undefined"
    title = browser.evaluate("document.querySelector('[data-experiment-title]').textContent")
    assert "<script>window.__planted = 2</script>" in title
    errors, requests = browser.problems()
    assert errors == []
    assert requests == []
    shot = tmp_path / "report.png"
    browser.screenshot(shot)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 50_000
    keep = os.environ.get("AICHAOS_SCREENSHOT_DIR")
    if keep:  # for docs/: AICHAOS_SCREENSHOT_DIR=docs pytest tests/test_reports_browser.py
        shutil.copy(shot, Path(keep) / "report-screenshot.png")


def test_zooming_one_timeline_zooms_them_all(browser: Browser, reports: dict[str, Path]) -> None:
    browser.load(reports["failing"])
    plots = _plots(browser)
    browser.poll(f"document.querySelectorAll('.plot[data-drawn]').length === {plots}")
    browser.evaluate(
        "Plotly.relayout(document.getElementById('chart-ttft'), {'xaxis.range': [60, 100]})"
        ".then(() => true)"
    )
    ranges = browser.poll(
        "(() => { const r = ['load', 'errors', 'served', 'server-running'].map("
        "id => document.getElementById('chart-' + id).layout.xaxis.range);"
        " return r.every(x => x[0] === 60 && x[1] === 100) && r; })()",
        limit=10,
    )
    assert ranges == [[60, 100]] * 4
    # the CDFs have their own axis and stay as they were
    assert browser.evaluate("document.getElementById('chart-cdf-ttft').layout.xaxis.type") == "log"
    errors, requests = browser.problems()
    assert errors == [] and requests == []


def test_report_without_server_metrics_loads_cleanly(
    browser: Browser, reports: dict[str, Path]
) -> None:
    browser.load(reports["no_metrics"])
    plots = _plots(browser)
    assert browser.poll(f"document.querySelectorAll('.plot[data-drawn]').length === {plots}")
    empty = browser.evaluate(
        "Array.from(document.querySelectorAll('#server .empty')).map(e => e.textContent.trim())"
    )
    assert empty == ["no server metrics"] * 6
    errors, requests = browser.problems()
    assert errors == [] and requests == []
