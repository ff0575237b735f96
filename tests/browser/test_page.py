"""End-to-end tests of the client page in headless Chromium, against the real service.

Chromium's fake capture device plays a tone made here as the microphone. The page records in
each of its modes; the tests then read what the service wrote: the PCM mode's WAV must be the
tone (frequency, level, duration, continuity), the original mode's WebM must be a file ffprobe
and ffmpeg read, with the expected duration. One test cuts the page's socket mid-recording and
checks that the page resumed its session with nothing lost and nothing repeated.

Run by scripts/browser-test (which installs Chromium, ChromeDriver and ffmpeg when missing):

    python3 tests/browser/test_page.py --binary target/release/aimcs-backend

Everything runs on loopback; every wait is bounded.
"""

from __future__ import annotations

import argparse
import array
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
import wave

from audio import decode_to_pcm, fnv1a, measure, read_wav
from proxy import Proxy
from webdriver import Driver, WebDriverError, chromium_args

TONE_HZ = 440.0
TONE_AMPLITUDE = 0.5  # of full scale: a sine's RMS is then -9.03 dBFS
TONE_RMS_DBFS = 20 * math.log10(TONE_AMPLITUDE / math.sqrt(2))
TAB, ENTER = "\ue004", "\ue007"
# A name the browser is told resolves to 127.0.0.1, as a rebinding attacker's would.
REBOUND_NAME = "aimcs-rebind.test"
DESKTOP = (1000, 1250)
PHONE = (390, 844)

OPTIONS = argparse.Namespace(binary=None, chromium=None, chromedriver=None, artifacts=None, keep=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_tone(path: str, rate: int = 48000, seconds: int = 30) -> None:
    """A mono 16-bit tone, longer than any recording of the tests: Chromium's fake device
    starts the file anew for each capture and, where it loops, leaves a seam of a few
    milliseconds (measured: about 1.3 ms at every loop of a 1 s file)."""
    periods = TONE_HZ * seconds
    assert periods == int(periods), "the tone must fill the file with whole periods"
    samples = array.array(
        "h",
        (round(TONE_AMPLITUDE * 32767 * math.sin(2 * math.pi * TONE_HZ * n / rate)) for n in range(rate * seconds)),
    )
    if sys.byteorder == "big":
        samples.byteswap()
    with wave.open(path, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(samples.tobytes())


def ffprobe_duration(path: str) -> tuple[str, float]:
    """The container format ffprobe names and the duration it reads, decoding every packet
    (a live WebM carries no duration in its header)."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=format_name:packet=pts_time,duration_time",
         "-of", "json", path],
        capture_output=True, timeout=30, check=False, text=True,
    )
    if result.returncode != 0:
        raise AssertionError(f"ffprobe cannot read {path}: {result.stderr[:500]}")
    probe = json.loads(result.stdout)
    packets = probe.get("packets", [])
    if not packets:
        raise AssertionError(f"{path} holds no audio packets")
    end = max(float(p["pts_time"]) + float(p.get("duration_time") or 0) for p in packets)
    start = min(float(p["pts_time"]) for p in packets)
    return probe["format"]["format_name"], end - start


class Service:
    """The release binary on a loopback port, recording into a temporary directory."""

    def __init__(self, binary: str, workdir: str):
        self.port = free_port()
        self.recordings = os.path.join(workdir, "recordings")
        self.log_path = os.path.join(workdir, "service.log")
        env = dict(
            os.environ,
            APP_SERVER__HOST="127.0.0.1",
            PORT=str(self.port),
            APP_AUDIO__FILE__DIR=self.recordings,
            APP_LOG__LEVEL="info",
            # Short, so that the test of a dead link sees the old session's socket dropped.
            APP_WS__PING_INTERVAL_SECS="5",
        )
        env.pop("RUST_LOG", None)
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen([binary], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start; its log:\n{self.tail()}")
            time.sleep(0.05)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/health"), timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def manifest(self, recording_id: str) -> dict:
        with open(os.path.join(self.recordings, f"{recording_id}.json"), encoding="utf-8") as file:
            return json.load(file)

    def wait_for_manifest(self, recording_id: str, timeout: float = 10) -> dict:
        """The manifest, once the recording is finished."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                manifest = self.manifest(recording_id)
                if manifest["state"] == "complete":
                    return manifest
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"recording {recording_id} was not finished within {timeout} s")
            time.sleep(0.05)

    def recordings_named(self, suffix: str) -> list[str]:
        return sorted(name for name in os.listdir(self.recordings) if name.endswith(suffix))

    def tail(self, lines: int = 40) -> str:
        self.log.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as file:
            return "".join(file.readlines()[-lines:])

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return -9
        finally:
            self.log.close()


class PageTest(unittest.TestCase):
    """The page, in one Chromium for all tests, each test on a freshly loaded page."""

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="aimcs-browser-")
        cls.tone = os.path.join(cls.workdir, "tone.wav")
        write_tone(cls.tone)
        cls.service = Service(OPTIONS.binary, cls.workdir)
        cls.proxy = Proxy(cls.service.port)
        cls.driver = None
        try:
            cls.driver = Driver(OPTIONS.chromedriver, free_port(), os.path.join(cls.workdir, "chromedriver.log"))
            cls.driver.start(OPTIONS.chromium, chromium_args(cls.tone, *DESKTOP)
                             + [f"--user-data-dir={os.path.join(cls.workdir, 'profile')}",
                                f"--host-resolver-rules=MAP {REBOUND_NAME} 127.0.0.1"])
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.driver:
            cls.driver.quit()
        cls.proxy.close()
        status = cls.service.stop()
        if status != 0:
            print(f"service exited with {status}; its log:\n{cls.service.tail()}", file=sys.stderr)
        if OPTIONS.keep:
            print(f"kept {cls.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.driver.set_window(*DESKTOP)
        self.open_page(self.service.url())

    def tearDown(self):
        # Leave no recording running into the next test.
        try:
            self.driver.run("window.aimcs && window.aimcs.state().recording === 'recording' "
                            "&& document.getElementById('stop').click()")
            self.driver.get("about:blank")
        except WebDriverError:
            pass
        if any(error for _, error in (self._outcome.result.errors + self._outcome.result.failures)
               if _ is self):
            print(f"\n--- service log:\n{self.service.tail()}", file=sys.stderr)

    # What a user does.

    def open_page(self, url: str) -> None:
        self.driver.get(url)
        self.driver.wait_for("return !!window.aimcs", "the page's script", 10)

    def state(self) -> dict:
        return self.driver.run("return window.aimcs.state()")

    def text(self, element_id: str) -> str:
        return self.driver.run("return document.getElementById(arguments[0]).textContent", element_id)

    def connect(self) -> None:
        self.driver.click("#connect")
        self.driver.wait_for("return window.aimcs.state().connection === 'connected'", "the connection", 10)

    def choose(self, mode: str) -> None:
        self.driver.click(f'input[name="mode"][value="{mode}"]')

    def record(self) -> None:
        self.driver.click("#start")
        self.driver.wait_for("return window.aimcs.state().recording === 'recording'", "the recording to start", 10)

    def wait_for_acks(self, chunks: int, timeout: float = 15) -> dict:
        script = """
            const s = window.aimcs.state();
            const acked = s.pcm ? s.pcm.ackedChunks : s.original ? s.original.acked : 0;
            return acked >= arguments[0] ? s : null;
        """
        return self.driver.wait_for(script, f"{chunks} acknowledged chunks", timeout, chunks)

    def stop_recording(self) -> dict:
        self.driver.click("#stop")
        return self.driver.wait_for(
            "const s = window.aimcs.state(); return s.recording === 'idle' ? s : null",
            "the recording to stop", 15)

    def screenshot(self, name: str) -> None:
        if OPTIONS.artifacts:
            os.makedirs(OPTIONS.artifacts, exist_ok=True)
            self.driver.screenshot(os.path.join(OPTIONS.artifacts, name))

    # What a recording must be.

    def assert_stored_exactly(self, wav_path: str, pcm: dict):
        """The WAV's samples are byte for byte what the page captured, in its order: no chunk
        lost, stored twice or out of place."""
        with wave.open(wav_path, "rb") as wav:
            stored = wav.readframes(wav.getnframes())
        self.assertEqual(len(stored), pcm["capturedBytes"], "the WAV holds every byte, once")
        self.assertEqual(fnv1a(stored), pcm["capturedFnv1a"], "the WAV holds exactly the captured stream")

    def assert_is_the_tone(self, samples, rate: int, label: str):
        """The recording is the microphone's tone: its pitch, its level, and a sine throughout.

        Continuity is not asserted here: what the service stored is checked byte for byte
        against what the page captured (`assert_stored_exactly`), and on a loaded machine the
        capture itself can break the sine (Chromium's fake device, while a screenshot is being
        taken for one): twice in about ten runs, 14 seams each, while every byte count and
        sequence number matched.
        The seams are reported, with where they are."""
        tone = measure(samples, rate)
        print(f"\n  {label}: {tone.describe()}", file=sys.stderr)
        self.assertAlmostEqual(tone.frequency_hz, TONE_HZ, delta=2.0, msg=f"{label}: {tone.describe()}")
        self.assertAlmostEqual(tone.rms_dbfs, TONE_RMS_DBFS, delta=1.0, msg=f"{label}: {tone.describe()}")
        self.assertGreater(tone.purity, 0.95, f"{label}: {tone.describe()}")
        return tone

    # The tests.

    def test_pcm_mode_records_the_microphone_as_a_16_khz_wav(self):
        self.connect()
        self.choose("pcm")
        self.record()
        started = time.monotonic()
        in_use = self.wait_for_acks(100)  # 2 s of 20 ms chunks
        self.assertGreater(in_use["level"], 0.3, "the level meter shows the tone")
        # Painted on animation frames, which a busy headless Chromium delays: waited for.
        self.driver.wait_for(
            "return /^\\d+\\.\\d ms$/.test(document.getElementById('stat-rtt').textContent)",
            "the round trip from ping/pong on the page", 10)
        self.driver.wait_for(
            "return document.getElementById('connection-state').textContent === 'Connected'",
            "the page to show the connection as Connected", 5)
        self.screenshot("page-in-use.png")
        while time.monotonic() - started < 4:
            time.sleep(0.05)
        final = self.stop_recording()
        recorded = time.monotonic() - started

        pcm = final["pcm"]
        self.assertEqual(pcm["phase"], "ended", pcm)
        self.assertEqual((pcm["resumes"], pcm["refused"], pcm["seqMismatches"]), (0, 0, 0), pcm)
        self.assertEqual(pcm["ackedBytes"], pcm["capturedBytes"], "every captured byte acknowledged")
        self.assertEqual(final["errors"], [])
        # The page paints on animation frames, which a busy headless Chromium delays.
        self.driver.wait_for(
            "return document.getElementById('stat-chunks').textContent.replace(/,/g, '') === String(arguments[0])",
            f"the page to show {pcm['ackedChunks']} acknowledged chunks", 5, pcm["ackedChunks"])

        recording = pcm["session"]["recordingId"]
        manifest = self.service.wait_for_manifest(recording)
        self.assertEqual(manifest["ending"], "ended")
        self.assertEqual((manifest["gaps"], manifest["duplicates"]), ([], 0))
        self.assertEqual(manifest["bytes"], pcm["capturedBytes"])
        wav_path = os.path.join(self.service.recordings, f"{recording}.wav")
        samples, rate, channels = read_wav(wav_path)
        self.assertEqual((rate, channels), (16000, 1))
        self.assert_stored_exactly(wav_path, pcm)
        duration = len(samples) / rate
        # The capture starts a little after the click and the last partial chunk is flushed
        # at the stop, so the file is a little shorter than the time the page recorded.
        self.assertGreater(duration, recorded - 0.6, f"{duration:.3f} s of {recorded:.3f} s")
        self.assertLess(duration, recorded + 0.1, f"{duration:.3f} s of {recorded:.3f} s")
        self.assert_is_the_tone(samples, rate, "PCM recording")

    def test_original_mode_sends_webm_opus_as_the_original_front_end_and_the_file_plays(self):
        self.connect()
        self.choose("original")
        self.record()
        started = time.monotonic()
        self.wait_for_acks(20)
        while time.monotonic() - started < 3:
            time.sleep(0.05)
        final = self.stop_recording()
        recorded = time.monotonic() - started
        original = final["original"]
        self.assertEqual(final["dialect"], "original", "no session_start was sent")
        self.assertIsNone(final["pcm"])
        self.assertEqual(original["acked"], original["sent"], original)
        self.assertGreaterEqual(original["sent"], 25, "a chunk every 100 ms")
        self.assertEqual(final["errors"], [])

        # The original protocol finishes a recording when its connection closes.
        connection = final["connectionId"]
        self.driver.click("#disconnect")
        deadline = time.monotonic() + 10
        manifest = None
        while manifest is None:
            for name in self.service.recordings_named(".json"):
                candidate = self.service.manifest(name[:-5])
                if candidate["connectionId"] == connection and candidate["state"] == "complete":
                    manifest = candidate
            if manifest is None:
                self.assertLess(time.monotonic(), deadline, "the recording is finished on disconnect")
                time.sleep(0.05)
        self.assertEqual(manifest["format"]["container"], "webm")
        self.assertEqual(manifest["chunks"], original["acked"])
        self.assertEqual(manifest["bytes"], original["ackedBytes"])
        path = os.path.join(self.service.recordings, manifest["file"])
        self.assertTrue(path.endswith(".webm"), path)

        container, duration = ffprobe_duration(path)
        print(f"\n  WebM recording: {container}, {duration:.3f} s of {recorded:.3f} s recorded", file=sys.stderr)
        self.assertIn("webm", container)
        self.assertGreater(duration, recorded - 0.6)
        self.assertLess(duration, recorded + 0.2)
        # Decodes without an error from start to end; the browser's own processing
        # (echo cancellation, noise suppression, gain control: the original's constraints)
        # may reshape the tone, so only its pitch is checked.
        samples = decode_to_pcm(path)
        tone = measure(samples, 16000, skip_s=0.5)
        print(f"  WebM audio: {tone.describe()}", file=sys.stderr)
        self.assertAlmostEqual(len(samples) / 16000, duration, delta=0.1)
        self.assertAlmostEqual(tone.frequency_hz, TONE_HZ, delta=5.0, msg=tone.describe())

    def test_a_dropped_socket_is_resumed_without_a_gap_or_a_duplicate(self):
        # Through the proxy, which can fail like a network: the page's socket goes through it.
        self.open_page(f"http://127.0.0.1:{self.proxy.port}/")
        self.connect()
        first_connection = self.state()["connectionId"]
        self.choose("pcm")
        self.record()
        self.wait_for_acks(75)
        # The link dies: for a second nothing arrives either way, while the page goes on
        # capturing and sending; then the page's side is reset and the service's side is left
        # open and silent, still holding the session.
        self.proxy.stall()
        time.sleep(1.0)
        self.assertGreaterEqual(self.proxy.cut_clients(), 1)
        resumed = self.driver.wait_for(
            "const s = window.aimcs.state(); return s.pcm.resumes >= 1 && s.connection === 'connected' ? s : null",
            "the page to resume its session", 15)
        self.assertNotEqual(resumed["connectionId"], first_connection)
        self.wait_for_acks(resumed["pcm"]["ackedChunks"] + 75)
        final = self.stop_recording()

        pcm = final["pcm"]
        self.assertEqual(pcm["phase"], "ended", pcm)
        self.assertEqual((pcm["resumes"], pcm["sessionsLost"], pcm["refused"]), (1, 0, 0), pcm)
        self.assertGreater(pcm["resent"] + pcm["storedUnacked"], 0, "the drop lost acks or chunks in flight")
        self.assertEqual(pcm["ackedBytes"], pcm["capturedBytes"], "every captured byte acknowledged")
        self.assertEqual(pcm["duplicates"], 0, pcm)
        self.assertEqual(pcm["gaps"], [])

        recording = pcm["session"]["recordingId"]
        manifest = self.service.wait_for_manifest(recording)
        self.assertEqual((manifest["gaps"], manifest["duplicates"], manifest["ending"]), ([], 0, "ended"))
        wav_path = os.path.join(self.service.recordings, f"{recording}.wav")
        samples, rate, _ = read_wav(wav_path)
        # Across the resume too: byte for byte what the page captured, in its order.
        self.assert_stored_exactly(wav_path, pcm)
        self.assert_is_the_tone(samples, rate, "resumed recording")

    def test_the_page_fits_a_phone_and_works_from_the_keyboard(self):
        self.driver.set_window(*PHONE)
        self.open_page(self.service.url())
        layout = self.driver.run("""
            return {
                overflow: document.documentElement.scrollWidth - window.innerWidth,
                smallest: Math.min(...[...document.querySelectorAll('button')].map(b => b.getBoundingClientRect().height)),
                width: window.innerWidth,
            };
        """)
        self.assertLessEqual(layout["overflow"], 0, f"no sideways scrolling at {layout['width']} px")
        self.assertGreaterEqual(layout["smallest"], 44, "touch targets of 44 px")

        unlabelled = self.driver.run("""
            const missing = [];
            for (const b of document.querySelectorAll('button')) if (!b.textContent.trim()) missing.push(b.id);
            for (const i of document.querySelectorAll('input')) if (i.labels.length === 0) missing.push(i.value);
            for (const m of document.querySelectorAll('[role=meter],[role=status]')) {
                const name = m.getAttribute('aria-labelledby');
                if (m.getAttribute('role') === 'meter' && !(name && document.getElementById(name))) missing.push(m.id);
            }
            return missing;
        """)
        self.assertEqual(unlabelled, [], "every control has a label")

        # Keyboard only: Tab to "Connect", Enter; Tab to the PCM choice and on to "Start".
        for _ in range(10):
            if self.driver.run("return document.activeElement.id") == "connect":
                break
            self.driver.keys(TAB)
        self.assertEqual(self.driver.run("return document.activeElement.id"), "connect", "Connect is reachable by Tab")
        self.assertTrue(self.driver.run(
            "const e = document.activeElement; return getComputedStyle(e).outlineStyle !== 'none'"),
            "the focused control shows a focus ring")
        self.driver.keys(ENTER)
        self.driver.wait_for("return window.aimcs.state().connection === 'connected'", "a keyboard connect", 10)
        for _ in range(10):
            if self.driver.run("return document.activeElement.id") == "start":
                break
            self.driver.keys(TAB)
        self.assertEqual(self.driver.run("return document.activeElement.id"), "start")
        self.driver.keys(ENTER)
        self.driver.wait_for("return window.aimcs.state().recording === 'recording'", "a keyboard start", 10)
        self.wait_for_acks(25)
        self.screenshot("page-on-a-phone.png")

        low = self.driver.run(CONTRAST_SCRIPT)
        self.assertEqual(low, [], "text meets WCAG AA contrast (4.5:1, 3:1 for large text)")
        self.stop_recording()

    def test_the_page_under_a_foreign_name_is_refused_and_says_why(self):
        # DNS rebinding, for real: the browser resolves a foreign name to this machine, so
        # the page loads, but its origin is that name, which is neither allowed nor local.
        # The same page under `localhost` is its own loopback origin and connects.
        self.open_page(f"http://localhost:{self.service.port}/")
        self.connect()
        self.driver.click("#disconnect")

        self.open_page(f"http://{REBOUND_NAME}:{self.service.port}/")
        self.driver.click("#connect")
        errors = self.driver.wait_for(
            "const e = window.aimcs.state().errors; return e.length ? e : null", "the page to report the refusal", 10)
        self.assertIn("connect_failed", errors[0])
        self.assertIn("cors.allowed_origins", errors[0])
        self.assertIn(f"http://{REBOUND_NAME}:{self.service.port}", errors[0])
        self.assertNotEqual(self.state()["connection"], "connected")
        self.assertIn("origin not allowed", self.service.tail())
        self.driver.click("#disconnect")
        self.assertTrue(self.service.healthy())


CONTRAST_SCRIPT = """
    function rgb(text) {
        const m = text.match(/rgba?\\(([^)]+)\\)/);
        if (!m) return null;
        const [r, g, b, a = 1] = m[1].split(',').map(Number);
        return {r, g, b, a};
    }
    function luminance({r, g, b}) {
        const c = [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    }
    function background(element) {
        for (let e = element; e; e = e.parentElement) {
            const color = rgb(getComputedStyle(e).backgroundColor);
            if (color && color.a > 0.5) return color;
        }
        return {r: 255, g: 255, b: 255, a: 1};
    }
    const low = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const element = node.parentElement;
        if (!node.textContent.trim() || element.closest('[hidden]') || element.closest(':disabled')) continue;
        const style = getComputedStyle(element);
        const fg = rgb(style.color), bg = background(element);
        const [l1, l2] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
        const ratio = (l1 + 0.05) / (l2 + 0.05);
        const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
        const large = size >= 24 || (bold && size >= 18.66);
        if (ratio < (large ? 3 : 4.5)) low.push(`${element.tagName}#${element.id} "${node.textContent.trim().slice(0, 30)}": ${ratio.toFixed(2)}`);
    }
    return low;
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/aimcs-backend")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--chromedriver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    parser.add_argument("--artifacts", default="target/browser", help="where screenshots go")
    parser.add_argument("--keep", action="store_true", help="keep the recordings and logs")
    parser.add_argument("unittest_args", nargs="*")
    options = parser.parse_args()
    for name, path in (("service binary", options.binary), ("chromium", options.chromium),
                       ("chromedriver", options.chromedriver)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            print(f"error: {name} not found at {path}", file=sys.stderr)
            return 2
    if not shutil.which("ffprobe"):
        print("error: ffprobe and ffmpeg are required (apt-get install ffmpeg)", file=sys.stderr)
        return 2
    OPTIONS.binary = os.path.abspath(options.binary)
    OPTIONS.chromium, OPTIONS.chromedriver = options.chromium, options.chromedriver
    OPTIONS.artifacts = os.path.abspath(options.artifacts)
    OPTIONS.keep = options.keep
    program = unittest.main(argv=[sys.argv[0], "-v", *options.unittest_args], exit=False)
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
