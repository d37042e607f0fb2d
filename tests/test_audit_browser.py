"""The audit report in a real headless Chromium: no console errors, no broken images, not blank.

Chromium is driven over the DevTools protocol through ``--remote-debugging-pipe``
(JSON messages on file descriptors 3 and 4), so no WebSocket package is needed.
Console errors, uncaught exceptions and failed loads (``Log.entryAdded``) are
all collected; a deliberately broken page checks that they are.
"""
from __future__ import annotations

import base64
import fcntl
import importlib.util
import io
import json
import os
import select
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskmine.pipelines.cli import main
from maskmine.pipelines.mine import run_mining
from mining_helpers import coco_mini_config

pytestmark = pytest.mark.browser

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (Debian: apt-get install chromium); .ci/run installs it"
)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-pipe",
]


class Chromium:
    """A headless Chromium and a DevTools session on one page, over the debugging pipe."""

    def __init__(self, profile: Path, timeout: float = 60.0) -> None:
        self.timeout = timeout
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # fds >= 10 so the shell redirections onto 3 and 4 cannot clobber them
        r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)
        cmd = " ".join(shlex.quote(a) for a in [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"])
        self.proc = subprocess.Popen(
            ["bash", "-c", f"exec {cmd} 3<&{r} 4>&{w}"], pass_fds=(r, w),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(r)
        os.close(w)
        self.wfd, self.rfd = to_browser_w, from_browser_r
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self.wfd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for i, e in enumerate(self.events):
            if e.get("method") == event:
                return self.events.pop(i)
        while True:
            message = self._read_message(deadline)
            if message.get("method") == event:
                return message
            self.events.append(message)

    def open(self, url: str, width: int = 1280, height: int = 2000) -> list[str]:
        """Load ``url``; return its console errors, exceptions, failed loads and broken images."""
        self.events.clear()
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")
        broken = self.call("Runtime.evaluate", {
            "expression": "JSON.stringify(Array.from(document.images)"
                          ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src))",
            "returnByValue": True}, session=True)["result"]["value"]
        problems = [f"broken image {src}" for src in json.loads(broken)]
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                problems.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif e.get("method") == "Runtime.exceptionThrown":
                problems.append("exception: " + p["exceptionDetails"].get("text", "") + " "
                                + str(p["exceptionDetails"].get("exception", {}).get("description", "")))
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                problems.append(f"{p['entry']['source']}: {p['entry']['text']} {p['entry'].get('url', '')}")
        return problems

    def screenshot(self) -> np.ndarray:
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.wfd)
        os.close(self.rfd)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium); .ci/run installs it")
    chrome = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def report(coco_cc_by, nltk_data, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("audit-browser")
    labels = "nouns" if importlib.util.find_spec("maskmine.transforms.nouns") else "categories"
    run_mining(coco_mini_config(coco_cc_by, base / "run", labels=labels, num_shards=2), progress=False)
    out = base / "report"
    assert main(["audit", str(base / "run"), "--out", str(out), "--sample", "12", "--top-nouns", "6",
                 "--rare-nouns", "6", "--per-noun", "4", "--suspicious", "12", "--no-progress"]) == 0
    return out


def is_blank(pixels: np.ndarray) -> bool:
    return float(pixels.std()) < 5.0 or len(np.unique(pixels.reshape(-1, 3), axis=0)) < 16


@needs_chromium
def test_checker_sees_console_errors_and_broken_images(browser, tmp_path):
    """The negative control: a page with a console error, an exception and a missing image."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body><h1>x</h1>'
                    '<img src="missing.jpg"><script>console.error("boom"); notDefined();</script></body></html>')
    problems = browser.open(page.as_uri(), 400, 300)
    text = "\n".join(problems)
    assert "console.error: boom" in text
    assert "notDefined" in text
    assert "broken image" in text and "missing.jpg" in text
    assert is_blank(np.full((300, 400, 3), 255, np.uint8))


@needs_chromium
@pytest.mark.parametrize("page", ["index.html", "frequent.html", "rare.html", "suspicious.html", "spot-check.html"])
def test_report_pages_render_without_errors(browser, report, page, tmp_path):
    problems = browser.open((report / page).as_uri())
    assert problems == []
    shot = browser.screenshot()
    assert shot.shape == (2000, 1280, 3)
    assert not is_blank(shot)
    if page == "index.html":
        Image.fromarray(shot).save(tmp_path / "index.png")
