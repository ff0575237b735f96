"""Measurements of recorded audio, in the standard library only (no numpy).

The test's microphone plays a pure tone, so a recording is right when it is that tone, at the
expected level and length, and continuous: a sine obeys x[n] = 2·cos(ω)·x[n−1] − x[n−2]
exactly, so any sample that breaks that recurrence by much marks a seam where audio was lost,
repeated or reordered (a 20 ms chunk missing shifts the phase by 0.8 of a period at 440 Hz).
"""

from __future__ import annotations

import array
import math
import subprocess
import sys
import wave
from dataclasses import dataclass


@dataclass
class Tone:
    """What a stretch of audio measured as."""

    duration_s: float
    sample_rate: int
    frequency_hz: float  # from zero crossings
    purity: float  # share of the signal's power in a sinusoid at that frequency, 0..1
    rms_dbfs: float
    peak: int
    seams: int  # samples that break the sine's recurrence: discontinuities
    worst_seam: float  # largest break, as a fraction of the tone's amplitude
    seam_times: tuple = ()  # where the first seams are, in seconds from the start

    def describe(self) -> str:
        at = f" at {', '.join(f'{t:.3f}' for t in self.seam_times)} s" if self.seam_times else ""
        return (
            f"{self.duration_s:.3f} s at {self.sample_rate} Hz, {self.frequency_hz:.1f} Hz, "
            f"purity {self.purity:.3f}, {self.rms_dbfs:.1f} dBFS, "
            f"{self.seams} discontinuities (worst {self.worst_seam:.3f} of the amplitude){at}"
        )


def read_wav(path: str) -> tuple[array.array, int, int]:
    """The samples of a 16-bit PCM WAV, its rate and its channel count."""
    with wave.open(path, "rb") as file:
        if file.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * file.getsampwidth()}-bit samples, expected 16")
        rate, channels = file.getframerate(), file.getnchannels()
        frames = file.readframes(file.getnframes())
    samples = array.array("h")
    samples.frombytes(frames)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples, rate, channels


def fnv1a(data: bytes, hash: int = 2166136261) -> int:
    """FNV-1a, 32 bits: the page's fingerprint of what it captured."""
    for byte in data:
        hash = ((hash ^ byte) * 16777619) & 0xFFFFFFFF
    return hash


def decode_to_pcm(path: str, rate: int = 16000) -> array.array:
    """Decodes any file ffmpeg reads to mono 16-bit samples; fails on a decoding error."""
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", path,
         "-f", "s16le", "-ac", "1", "-ar", str(rate), "-"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0 or result.stderr.strip():
        raise ValueError(f"ffmpeg could not decode {path}: {result.stderr.decode()[:500]}")
    samples = array.array("h")
    samples.frombytes(result.stdout)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def measure(samples: array.array, rate: int, skip_s: float = 0.1) -> Tone:
    """Measures a mono tone, leaving out the first `skip_s` seconds (the microphone and the
    resampler's filters starting up) from everything but the duration."""
    duration = len(samples) / rate
    body = samples[int(skip_s * rate):]
    if len(body) < rate // 10:
        return Tone(duration, rate, 0.0, 0.0, -math.inf, 0, 0, 0.0)

    # Frequency from the first and last zero crossings, each placed between its two samples.
    crossings = []
    for n in range(1, len(body)):
        a, b = body[n - 1], body[n]
        if (a < 0) != (b < 0):
            crossings.append(n - 1 + a / (a - b))
    if len(crossings) < 3:
        frequency = 0.0
    else:
        frequency = (len(crossings) - 1) / 2 / ((crossings[-1] - crossings[0]) / rate)

    power = sum(x * x for x in body) / len(body)
    rms_dbfs = 10 * math.log10(power / 32768**2) if power > 0 else -math.inf
    peak = max(abs(x) for x in body)

    # Purity: in windows of 0.1 s, fit a sinusoid at `frequency` (least squares) and compare
    # its power with the window's; the average over the windows.
    omega = 2 * math.pi * frequency / rate
    window = rate // 10
    shares = []
    for start in range(0, len(body) - window + 1, window):
        part = body[start:start + window]
        c = s = 0.0
        for n, x in enumerate(part):
            c += x * math.cos(omega * n)
            s += x * math.sin(omega * n)
        part_power = sum(x * x for x in part) / window
        fitted = 2 * (c * c + s * s) / window**2
        shares.append(fitted / part_power if part_power > 0 else 0.0)
    purity = sum(shares) / len(shares) if shares else 0.0

    # Seams: the recurrence's residual against the tone's amplitude. Quantisation and the
    # resamplers leave about 0.0002 of it; a lost or repeated 20 ms chunk leaves well over 0.1.
    amplitude = math.sqrt(2 * power)
    k = 2 * math.cos(omega)
    threshold = 0.02 * amplitude
    seams = 0
    worst = 0.0
    seam_times = []
    for n in range(2, len(body)):
        residual = abs(body[n] - k * body[n - 1] + body[n - 2])
        if residual > worst:
            worst = residual
        if residual > threshold:
            seams += 1
            if len(seam_times) < 16:
                seam_times.append(skip_s + n / rate)
    return Tone(duration, rate, frequency, min(purity, 1.0), rms_dbfs, peak, seams,
                worst / amplitude if amplitude else 0.0, tuple(seam_times))
