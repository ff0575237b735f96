"""A small W3C WebDriver client over chromedriver, in the standard library only.

Why WebDriver and not Playwright: Debian's `chromium-driver` is built from the same source
and version as its `chromium`, so the driver always speaks the browser's protocol, and the
client is plain HTTP and JSON. Nothing is fetched from a registry when the tests run, and there
is no lockfile to keep in step with the distribution's browser.

Every call is bounded: HTTP requests time out, waits poll against a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class WebDriverError(RuntimeError):
    """chromedriver refused a command, or a wait ran out of time."""


class Driver:
    """chromedriver, started on a loopback port, with one Chromium session."""

    def __init__(self, chromedriver: str, port: int, log_path: str):
        self.base = f"http://127.0.0.1:{port}"
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [chromedriver, f"--port={port}", "--allowed-ips=127.0.0.1"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.session = None
        deadline = time.monotonic() + 15
        while True:
            try:
                if self._call("GET", "/status", timeout=2)["ready"]:
                    break
            except (OSError, WebDriverError):
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise WebDriverError("chromedriver did not start within 15 s")
            time.sleep(0.1)

    def start(self, binary: str, args: list[str]) -> None:
        """Opens the browser session."""
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": binary, "args": args},
            "timeouts": {"script": 20_000, "pageLoad": 20_000, "implicit": 0},
        }
        answer = self._call(
            "POST", "/session", {"capabilities": {"alwaysMatch": capabilities}}, timeout=60
        )
        self.session = answer["sessionId"]

    def quit(self) -> None:
        """Closes the browser and stops chromedriver, whatever state they are in."""
        if self.session:
            try:
                self._call("DELETE", f"/session/{self.session}", timeout=10)
            except (OSError, WebDriverError):
                pass
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    # Commands of the session.

    def get(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def set_window(self, width: int, height: int) -> None:
        self._session("POST", "/window/rect", {"width": width, "height": height})

    def find(self, css: str) -> str:
        """The element matching `css`; fails when there is none."""
        return self._session("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css: str) -> None:
        """Clicks like a person: real input events, so the page gets a user activation."""
        self._session("POST", f"/element/{self.find(css)}/click", {})

    def press(self, css: str, keys: str) -> None:
        """Focuses the element and types `keys` (WebDriver key codes allowed)."""
        self._session("POST", f"/element/{self.find(css)}/value", {"text": keys})

    def keys(self, *keys: str) -> None:
        """Types `keys` on the keyboard into whatever has the focus, as a person would (Tab
        moves the focus, Enter activates), through WebDriver's input actions."""
        events = []
        for key in keys:
            events += [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]
        self._session("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": events}]})

    def run(self, script: str, *args):
        """Runs `script` as a function body in the page and returns its value."""
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, path: str) -> None:
        png = base64.b64decode(self._session("GET", "/screenshot"))
        with open(path, "wb") as file:
            file.write(png)

    def wait_for(self, script: str, what: str, timeout: float, *args):
        """Polls `script` until it returns something truthy; returns it. Fails after
        `timeout` seconds, naming `what` was awaited."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise WebDriverError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    # Transport.

    def _session(self, method: str, path: str, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def _call(self, method: str, path: str, body=None, timeout: float = 30):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:
            try:
                detail = json.load(error)["value"]
                message = f"{detail.get('error')}: {detail.get('message', '')[:500]}"
            except (ValueError, KeyError, TypeError):
                message = str(error)
            raise WebDriverError(f"{method} {path}: {message}") from None
        return answer["value"]


def chromium_args(wav: str, width: int, height: int) -> list[str]:
    """Flags for a headless Chromium whose microphone plays `wav`."""
    args = [
        "--headless=new",
        f"--window-size={width},{height}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--metrics-recording-only",
        # Keep timers and audio running at full speed in a headless, "hidden" page.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        "--autoplay-policy=no-user-gesture-required",
        # The microphone: a fake device, permission granted without a prompt, playing the
        # test's WAV. Without a `%noloop` suffix the file loops, so a tone a whole number of
        # periods long plays on seamlessly for as long as the page records.
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ]
    # Chromium refuses to run as root with its sandbox (CI runs as root).
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    return args
