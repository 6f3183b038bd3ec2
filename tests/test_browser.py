"""Open the HTML report in headless Chromium: every image decodes, no console errors, screenshot.

Talks to Chromium over the DevTools protocol (websockets), so the checks run in the page itself.
Skips with a reason when Chromium is not installed (CI installs Debian's ``chromium``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_report import sample_report

from mixplan.planning.report import render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
    "--window-size=1200,1600",
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)


class DevTools:
    """A minimal DevTools-protocol client on one page session (flattened target)."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.socket = connect(ws_url, max_size=64 * 2**20, open_timeout=600)
        self.next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]

    def call(self, method: str, params: dict | None = None, *, session: bool = False) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + 600  # a ceiling for a loaded machine
        while time.monotonic() < deadline:
            reply = json.loads(self.socket.recv(timeout=600))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(method)

    def wait_for(self, event: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for seen in self.events:
            if seen.get("method") == event:
                return seen
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv(timeout=timeout))
            self.events.append(message)
            if message.get("method") == event:
                return message
        raise TimeoutError(event)

    def close(self) -> None:
        self.socket.close()


def open_in_chromium(page: Path, screenshot: Path, profile: Path) -> dict:
    """Load ``page`` in headless Chromium; return image and console facts, save a screenshot."""
    process = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        ws_url = None
        deadline = time.monotonic() + 600  # a ceiling for a loaded machine
        while time.monotonic() < deadline and ws_url is None:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                break
            if "DevTools listening on " in line:
                ws_url = line.split("DevTools listening on ", 1)[1].strip()
        assert ws_url, "chromium did not start its DevTools endpoint within 30 s"
        tools = DevTools(ws_url)
        try:
            for domain in ("Page", "Runtime", "Log"):
                tools.call(f"{domain}.enable", session=True)
            tools.call("Page.navigate", {"url": page.resolve().as_uri()}, session=True)
            tools.wait_for("Page.loadEventFired")
            facts = tools.call(
                "Runtime.evaluate",
                {
                    "expression": (
                        "JSON.stringify({images: document.images.length, broken: "
                        "Array.from(document.images).filter(i => !i.complete || "
                        "i.naturalWidth === 0).length, title: document.title, "
                        "sections: document.querySelectorAll('section').length})"
                    ),
                    "returnByValue": True,
                },
                session=True,
            )
            result = json.loads(facts["result"]["value"])
            shot = tools.call(
                "Page.captureScreenshot",
                {"format": "png", "captureBeyondViewport": True},
                session=True,
            )
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            errors = [
                event
                for event in tools.events
                if event.get("method") == "Runtime.exceptionThrown"
                or (
                    event.get("method") == "Runtime.consoleAPICalled"
                    and event["params"].get("type") == "error"
                )
                or (
                    event.get("method") == "Log.entryAdded"
                    and event["params"]["entry"].get("level") == "error"
                )
            ]
            result["errors"] = errors
            return result
        finally:
            tools.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_report_loads_in_chromium_with_every_image(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_html(sample_report()), encoding="utf-8")
    screenshot = Path(os.environ.get("MIXPLAN_SCREENSHOT", tmp_path / "report.png"))
    facts = open_in_chromium(page, screenshot, tmp_path / "profile")
    assert facts["title"] == "mixplan report"
    assert facts["images"] == 4 and facts["broken"] == 0
    assert facts["sections"] == 5
    assert facts["errors"] == []
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
