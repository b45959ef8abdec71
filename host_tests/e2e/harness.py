"""End-to-end harness: the development server in-process (CPython) and the firmware as a
simulated board in a subprocess, over loopback.

The board runs on the reference image by default: frozen32 (the MicroPython unix port, 32-bit,
the package frozen in) at -X heapsize=110K, the closest thing to an ESP32 WROOM without PSRAM
this host can run. Where that image cannot be built (no 32-bit toolchain or no MicroPython
source beside the checkout) the stock binary runs it instead, from .mpy files, with the heap
their code needs (STOCK_HEAP), and the run says so. Tests may also ask for runtime="cpython"."""

from __future__ import annotations

import contextlib
import wave
from pathlib import Path

from meerkat_tools import paths
from meerkat_tools.devserver import DevServer, ServerOptions
from meerkat_tools.sim import SimDevice

FIX = paths.FIXTURES
DEVICE_HEAP = "110K"  # an ESP32 WROOM's Python heap, on the frozen32 image
# The stock binary loads the package from .mpy files: its code then lives on the heap (about
# 145-160 KB on this 64-bit port), so it gets the smallest demo heap plus a margin (README, "Memory").
STOCK_HEAP = "272K"
FAST_RECONNECT = {"max_attempts": 0, "initial_backoff_ms": 50, "max_backoff_ms": 400, "max_total_ms": 0}
_reference = []


def reference_image():
    """(image, heap) the end-to-end tests run on: frozen32 at 110K, else the stock binary."""
    if not _reference:
        from meerkat_tools import image as images

        try:
            _reference.append((images.get("frozen32"), DEVICE_HEAP))
        except (images.ToolchainMissing, images.SourceMissing) as exc:
            print(f"end-to-end tests on the stock binary at {STOCK_HEAP}: frozen32 cannot be built here ({exc})")
            _reference.append(("stock", STOCK_HEAP))
    return _reference[0]


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
                 runtime: str = "micropython", heap: str | None = None, seconds: float = 90,
                 surface: str = "v2", image: str | None = None, device_surface: str | None = None, **config):
    """Start a server speaking `surface` ("v2" or "live"; the server's other options in
    `server`) and a simulated board talking to it; yields (server, device, recording). The
    device's own config comes from **config; its server.surface is "auto" unless
    device_surface pins it."""
    opts = ServerOptions(**dict({"surface": surface, "id_style": "short"}, **(server or {})))
    with DevServer.running(opts) as srv:
        host, port = srv.rpc_address
        cfg = {
            "server": {"rpc": f"{host}:{port}", "timeout_ms": 5000, "open_timeout_ms": 10000},
            "target": srv.target,
            "board": "sim",
            "log_level": "info",
            "reconnect": dict(FAST_RECONNECT),
        }
        if device_surface is not None:
            cfg["server"]["surface"] = device_surface
        cfg.update(config)
        recording = tmp_path / "speaker.wav"
        w = {"record": str(recording)}
        w.update(world or {})
        kw = {}
        if runtime == "micropython":
            ref_image, ref_heap = reference_image()
            kw["image"] = image or ref_image
            heap = heap or (ref_heap if image is None else STOCK_HEAP)
        dev = SimDevice(cfg, w, runtime=runtime, heap=heap if runtime == "micropython" else None, seconds=seconds, **kw)
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
    """v2: the channel.input audio frames the server received."""
    return [f for f in srv.client_frames(None, "channel.input") if f["chunk"]["kind"] == "audio_chunk"]


def stats(dev) -> dict:
    """The board's counters now (the `stats` command)."""
    n = len([line for line in dev.lines if "stats" in line])
    dev.send("stats")
    return dev.wait_for(lambda: [line["stats"] for line in dev.lines if "stats" in line][n:], 10, "stats")[0]


def wait_stats(dev, predicate, timeout: float) -> dict:
    """Until predicate(stats) holds (asked every 0.2 s while the board plays on), or fail."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        s = stats(dev)
        if predicate(s) or time.monotonic() > deadline:
            assert predicate(s), s
            return s
        dev.wait_for(lambda: False, 0.2, raise_on_timeout=False)


def played_runs(recording: Path, reply: bytes) -> list[tuple[int, float]]:
    """Each time the speaker started `reply` from its beginning: (byte offset in the recording,
    ms it then played exactly). The speaker output is bit-exact on the simulated board."""
    rec = wav_pcm(recording)
    first = next(i for i in range(0, len(reply), 2) if reply[i : i + 2] != b"\0\0")
    first -= first % 2
    probe = reply[first : first + 960]
    runs = []
    at = rec.find(probe)
    while at >= 0:
        start = at - first
        n = 0
        while start + n < len(rec) and n < len(reply) and rec[start + n] == reply[n]:
            n += 1
        runs.append((start, (n - n % 2) / 48))
        at = rec.find(probe, start + max(n, 960))
    return runs


def unexplained_ms(recording: Path, runs: list[tuple[int, float]]) -> float:
    """Sound on the speaker outside the given runs (10 ms cells with any non-zero sample):
    audio that played but was not a reply from its start, such as stale audio of an
    interrupted reply."""
    rec = wav_pcm(recording)
    covered = bytearray(len(rec) // 480 + 1)
    for start, ms in runs:
        for c in range(max(0, start) // 480, (start + int(ms * 48)) // 480 + 1):
            if c < len(covered):
                covered[c] = 1
    loud = 0
    for c in range(len(rec) // 480):
        if not covered[c] and rec[c * 480 : c * 480 + 480].strip(b"\0"):
            loud += 1
    return loud * 10.0
