"""Energy voice activity detection on PCM16 mono, the stand-in for OpenAI's server VAD.

Time is counted in received samples, not wall-clock time, so the result depends only on the
audio: speech starts after `onset_ms` of consecutive 20 ms windows above the threshold, and
ends after `silence_ms` of windows below it. A client that stops sending (instead of sending
silence) never reaches end-of-speech, exactly as with OpenAI.
"""

from __future__ import annotations

import math
import sys
from array import array
from dataclasses import dataclass

WINDOW_MS = 20


@dataclass
class VadEvent:
    kind: str  # "start" or "end"
    sample: int  # where speech started / where the last voiced window ended


class EnergyVad:
    def __init__(
        self,
        sample_rate: int = 24000,
        threshold_dbfs: float = -40.0,
        onset_ms: int = 40,
        silence_ms: int = 500,
    ):
        self.window = sample_rate * WINDOW_MS // 1000
        self.threshold_rms = 32768.0 * 10 ** (threshold_dbfs / 20.0)
        self.onset_windows = max(1, math.ceil(onset_ms / WINDOW_MS))
        self.silence_windows = max(1, math.ceil(silence_ms / WINDOW_MS))
        self.reset()

    def reset(self) -> None:
        self.samples = 0  # samples consumed into whole windows
        self.in_speech = False
        self.speech_start = 0
        self.last_voiced = 0  # sample index just after the last voiced window
        self._carry = b""
        self._voiced_run = 0
        self._silent_run = 0

    def feed(self, pcm: bytes) -> list[VadEvent]:
        data = self._carry + pcm
        usable = len(data) - len(data) % (2 * self.window)
        self._carry = data[usable:]
        events: list[VadEvent] = []
        samples = array("h")
        samples.frombytes(data[:usable])
        if sys.byteorder == "big":
            samples.byteswap()
        for start in range(0, len(samples), self.window):
            block = samples[start : start + self.window]
            rms = math.sqrt(sum(s * s for s in block) / self.window)
            event = self._window(rms >= self.threshold_rms)
            if event is not None:
                events.append(event)
        return events

    def _window(self, voiced: bool) -> VadEvent | None:
        self.samples += self.window
        if voiced:
            self._voiced_run += 1
            self._silent_run = 0
            self.last_voiced = self.samples
            if not self.in_speech and self._voiced_run >= self.onset_windows:
                self.in_speech = True
                self.speech_start = self.samples - self._voiced_run * self.window
                return VadEvent("start", self.speech_start)
            return None
        self._voiced_run = 0
        if self.in_speech:
            self._silent_run += 1
            if self._silent_run >= self.silence_windows:
                self.in_speech = False
                self._silent_run = 0
                return VadEvent("end", self.last_voiced)
        return None
