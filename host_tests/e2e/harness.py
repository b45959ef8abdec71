"""End-to-end harness: the development server in-process (CPython) and the firmware as a
simulated board in a subprocess (the MicroPython unix port by default), over loopback."""

from __future__ import annotations

import contextlib
import wave
from pathlib import Path

from meerkat_tools import paths
from meerkat_tools.devserver import DevServer, ServerOptions
from meerkat_tools.sim import SimDevice

FIX = paths.FIXTURES
# The heap of the simulated board on the unix port. A no-PSRAM ESP32 has ~112 KB, but the
# firmware's code alone takes about 110 KB of heap when loaded from .mpy files (120 KB on this
# 64-bit port), so the whole device does not fit in 110K; on a board it is frozen or in ROMFS.
# 224K is 28K above the smallest heap at which the demo completes (README, "Memory").
HEAP = "224K"
FAST_RECONNECT = {"max_attempts": 0, "initial_backoff_ms": 50, "max_backoff_ms": 400, "max_total_ms": 0}


def wav_pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        return w.readframes(w.getnframes())


def played_prefix_ms(recording: Path, reply: bytes) -> float:
    """How much of `reply` the fake speaker played, from its recording: the speaker output is
    bit-exact (gain 0 dB on the simulated board), so find where the reply starts and count the
    bytes that match it from there."""
    rec = wav_pcm(recording)
    first = next(i for i in range(0, len(reply), 2) if reply[i : i + 2] != b"\0\0")
    first -= first % 2
    probe = reply[first : first + 960]
    at = rec.find(probe)
    assert at >= 0, "the reply is not in the speaker recording"
    start = at - first
    n = 0
    while start + n < len(rec) and n < len(reply) and rec[start + n] == reply[n]:
        n += 1
    return (n - n % 2) / 48


@contextlib.contextmanager
def conversation(tmp_path: Path, server: dict | None = None, world: dict | None = None,
                 runtime: str = "micropython", heap: str | None = HEAP, seconds: float = 90, **config):
    """Start a server and a simulated board talking to it; yields (server, device, recording)."""
    opts = ServerOptions(**(server or {}))
    with DevServer.running(opts) as srv:
        host, port = srv.rpc_address
        cfg = {
            "server": {"rpc": f"{host}:{port}", "timeout_ms": 5000, "open_timeout_ms": 10000},
            "target": srv.target,
            "board": "sim",
            "log_level": "info",
            "reconnect": dict(FAST_RECONNECT),
        }
        cfg.update(config)
        recording = tmp_path / "speaker.wav"
        w = {"record": str(recording)}
        w.update(world or {})
        dev = SimDevice(cfg, w, runtime=runtime, heap=heap if runtime == "micropython" else None, seconds=seconds)
        try:
            with dev:
                yield srv, dev, recording
        finally:
            # On failure pytest shows this: what the board said, and how it ended.
            print("--- device log ---")
            for line in dev.logs()[-60:]:
                print(line)
            print("--- device summary ---", dev.summary, dev.exit_reason)
            if dev.stderr:
                print("--- device stderr ---\n" + dev.stderr[-3000:])


def ring_identity(summary: dict) -> bool:
    s = summary
    return s["frames_captured"] == s["frames_sent"] + s["frames_dropped"] + s["frames_discarded"] + s["frames_pending"]


def audio_frames(srv) -> list[dict]:
    return [f for f in srv.client_frames(None, "channel.input") if f["chunk"]["kind"] == "audio_chunk"]
