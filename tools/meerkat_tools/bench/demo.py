"""The full demo on the simulated board (unix port) against an in-process development server:
the user asks a question (fixtures/user_question.wav), the reply plays, the user barges in
(fixtures/user_interrupt.wav injected INJECT_AT_MS after the speaker's first audio), the
truncate is accepted, the channel closes cleanly.

Used for the memory figures (does it complete at a heap size; the heap low-water) and the
latencies. Instants (all on the host's time.monotonic(), which is CLOCK_MONOTONIC, the clock
the unix port's time.ticks_us() reads too):
  launch            just before the board's process is started
  ready             the board printed {"ready": true} (imports and Device() done)
  opened_sent       the server sent channel.opened (v2) or the `ready` observation (live)
  open_seen         the board's "state: open" line arrived on the host
  frame captured    the last sample of an uplink frame became readable in the fake I2S (world
                    clock: sample index -> microseconds since the world started -> ticks_us)
  frame at server   the server received that frame (its recording)
  true onset        the first sample of the injected speech (plus the fixture's onset_ms) in
                    the fake microphone
  vad decision      the earlier of: the board's barge_in line arrived on the host (printed in
                    the pump step that decided), the server received channel.interrupt (queued
                    at the decision); at most a pipe or socket hop after the real decision
  interrupt/truncate at server   the server received channel.interrupt / barge_in_truncate (v2),
                    the live/interrupt / live/truncate call (live)
  speaker silent    one past the last non-zero sample the fake speaker played after the onset
                    (its recording, world clock)
"""

from __future__ import annotations

import atexit
import base64
import json
import math
import shutil
import statistics
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import Any

from .. import mpy, paths
from ..sim import SimDevice, SimError
from ..sim.runner import firmware_build

HERE = Path(__file__).resolve().parent
PROBE = HERE / "mp_probe.py"
INJECT_AT_MS = 3000
_PROBE_LOCK = threading.Lock()
_PROBE_BUILDS: dict[mpy.Image, Path] = {}


def probe_build(image: mpy.Image | None = None) -> Path:
    """mp_probe compiled for the image's architecture (the stock binary's by default)."""
    image = image or mpy.stock()
    with _PROBE_LOCK:
        if image not in _PROBE_BUILDS:
            where = Path(tempfile.mkdtemp(prefix="meerkat-bench-probe-"))
            atexit.register(shutil.rmtree, where, True)
            _PROBE_BUILDS[image] = mpy.compile_modules([PROBE], where, image.arch, cross=image.mpy_cross)
        return _PROBE_BUILDS[image]


class ProbedSimDevice(SimDevice):
    """SimDevice running mp_probe (the board's main program plus the benchmark probe) instead
    of the plain main program; everything else (spec, output parsing, commands) is SimDevice's.
    Every output line gets its host arrival time in line["_t"]."""

    def __init__(self, *args: Any, probe: bool = True, sample_heap: bool = True, **kwargs: Any):
        on_line = kwargs.pop("on_line", None)

        def stamp(line: dict) -> None:
            line["_t"] = time.monotonic()
            if on_line is not None:
                on_line(line)

        super().__init__(*args, on_line=stamp, **kwargs)
        self.spec["bench"] = {"heap": sample_heap}  # read by mp_probe; the board ignores it
        self.probe = probe
        self.launched: float | None = None

    def start(self) -> "ProbedSimDevice":
        if self.runtime == "micropython":
            image = self.resolve_image()
            firmware_build(image)  # compiled before the clock starts
            if self.probe:
                self.main = PROBE.stem
                self.extra_path = [probe_build(image)]
        self.launched = time.monotonic()
        super().start()
        return self


def _wav_pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes())


def _stats(xs: list[float]) -> dict | None:
    if not xs:
        return None
    s = sorted(xs)
    return {
        "n": len(s),
        "min": round(s[0], 2),
        "median": round(statistics.median(s), 2),
        "p95": round(s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)], 2),
        "max": round(s[-1], 2),
    }


def run(
    heap: str,
    probe: bool = True,
    record: bool = True,
    timeout: float = 60,
    frame_ms: int = 40,
    sample_heap: bool = True,
    image: mpy.Image | None = None,
    surface: str = "live",
) -> dict:
    """One demo run; never raises for a failed demo (the result says what happened).
    probe: run mp_probe (clock and world lines, needed for the latencies); sample_heap: with
    the probe, also gc.collect() every 20 ms for the heap low-water; image: the unix-port
    executable (default the stock binary); surface: the dev server's, "live" (today's Meerkat)
    or "v2" (with the item_id extension, as meerkat-sim runs it: the barge-in ends in a
    truncate); the board finds it by itself (server.surface auto)."""
    work = Path(tempfile.mkdtemp(prefix="meerkat-bench-demo-"))
    try:
        return _run(work, heap, probe, record, timeout, frame_ms, sample_heap, image or mpy.stock(), surface)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(
    work: Path, heap: str, probe: bool, record: bool, timeout: float, frame_ms: int, sample_heap: bool, image: mpy.Image,
    surface: str,
) -> dict:
    from ..devserver import DevServer, ServerOptions

    out: dict[str, Any] = {"heap": heap, "completed": False, "probe": probe, "surface": surface}
    spk_wav = work / "speaker.wav"
    index = json.loads((paths.FIXTURES / "index.json").read_text())
    with DevServer.running(ServerOptions(surface=surface, item_ids=True)) as srv:
        cfg = {
            "server": {"rpc": "%s:%d" % srv.rpc_address},
            "target": srv.target,
            "board": "sim",
            "log_level": "info",
            "audio": {"frame_ms": frame_ms},
        }
        world: dict[str, Any] = {
            "mic_wav": str(paths.FIXTURES / "user_question.wav"),
            "inject_wav": str(paths.FIXTURES / "user_interrupt.wav"),
            "inject_at_ms": INJECT_AT_MS,
        }
        if record:
            world["record"] = str(spk_wav)
        dev = ProbedSimDevice(cfg, world, heap=heap, probe=probe, sample_heap=sample_heap, image=image)
        dev.start()
        try:
            _wait(dev, "state", 20, lambda s: s == "open")
            _wait(dev, "barge_in", timeout)  # (the question was heard and its reply is playing)
            _wait(dev, "assistant_transcript_truncated", 15)
            summary = dev.stop()
            out["exit"] = dev.exit_reason
            out["returncode"] = dev._proc.returncode if dev._proc is not None else None
            out["completed"] = bool(
                summary
                and dev.exit_reason == "close"
                and summary.get("state") == "closed"
                and summary.get("barge_ins", 0) >= 1
                and summary.get("truncates")
                and out["returncode"] == 0
            )
            out["summary"] = summary
            if not out["completed"]:
                # It got through the conversation but did not end cleanly: say how it ended.
                out["failure"] = _failure(dev, "ended in state %s, exit %s, return code %s" % (
                    (summary or {}).get("state"), dev.exit_reason, out["returncode"]))
        except SimError as exc:
            dev.stop(timeout=5)
            out["failure"] = _failure(dev, str(exc))
        lines = list(dev.lines)
        out["heap_low_free"] = _heap_low(lines)
        if out["completed"] or record:
            try:
                out.update(_latencies(dev, lines, srv, index, spk_wav if record else None, frame_ms, surface))
            except Exception as exc:  # a figure that cannot be computed is reported, not fatal
                out["latency_error"] = f"{type(exc).__name__}: {exc}"
    return out


def _wait(dev: SimDevice, name: str, timeout: float, where: Any = None) -> Any:
    """dev.wait_event, but giving up as soon as the board's process has ended."""
    deadline = time.monotonic() + timeout
    while True:
        hits = [d for d in dev.events(name) if where is None or where(d)]
        if hits:
            return hits[0]
        if not dev.running:
            time.sleep(0.3)  # let the reader threads take the last lines
            if any(where is None or where(d) for d in dev.events(name)):
                continue
            raise SimError(f"the board stopped before event {name}; {dev.describe_exit()}")
        if time.monotonic() > deadline:
            raise SimError(f"timed out after {timeout} s waiting for event {name}; {dev.describe_exit()}")
        time.sleep(0.02)


def _failure(dev: SimDevice, why: str) -> str:
    """What stopped the demo, in one line: a MemoryError and where, else the board's own error
    (a channel in state error, e.g. a bootstrap answer it could not take), else the wait."""
    err = dev.stderr.strip().splitlines()
    mem = [l.strip() for l in err if "MemoryError" in l]
    if mem:
        where = [l.strip() for l in err if l.strip().startswith("File ")]
        text = mem[-1].replace("memory allocation failed, allocating", "allocating")
        if where:
            # File ".../meerkat_rt/app.py", line 54, in __init__  ->  app.py:54 (__init__)
            parts = where[-1].split('"')
            f = parts[1].rsplit("/", 1)[-1] if len(parts) > 1 else "?"
            tail = parts[-1].replace(", line ", ":").replace(", in ", " (").strip() + ")"
            text += f" in {f}{tail}"
        return text
    summary = dev.summary or {}
    if summary.get("error"):
        return f"the board stopped in state {summary.get('state')}: {summary['error']}"
    logs = [l for l in dev.logs() if l.startswith("E ")]
    if logs:
        return f"the board logged: {logs[-1]}"
    first = why.splitlines()[0]
    return first + (f"; stderr: {err[-1]}" if err else "")


def _heap_low(lines: list[dict]) -> dict | None:
    lows = [l for l in lines if l.get("bench") == "heap"]
    if not lows:
        return None
    last = lows[-1]
    return {"free": last["free"], "used": last["used"]}


def _host_time_of_ticks(clock: dict, world_us: float) -> float:
    # world microseconds -> ticks_us (same process) -> host monotonic seconds (same clock).
    return (world_us + clock["ticks_us"] - clock["world_us"]) / 1e6


def _uplink_frames(srv: Any, surface: str) -> list[tuple[float, bytes]]:
    """(time at the server, PCM) of every audio frame the device sent."""
    if surface == "v2":
        out = []
        for e in srv.frames():
            f = e["frame"]
            if isinstance(f, dict) and f.get("type") == "channel.input" and f.get("chunk", {}).get("kind") == "audio_chunk":
                out.append((e["t"], base64.b64decode(f["chunk"]["data"])))
        return out
    # live: binary frames of raw PCM, which the provider took in order (its input, per channel)
    pcm: dict[Any, bytes] = {}
    out = []
    for e in srv.frames():
        if e["kind"] == "binary" and "offset" in e:
            if e["channel"] not in pcm:
                pcm[e["channel"]] = bytes(srv.input_pcm(e["channel"]))
            out.append((e["t"], pcm[e["channel"]][e["offset"]: e["offset"] + e["size"]]))
    return out


def _control_times(srv: Any, surface: str) -> dict:
    """When the server received the barge-in's interrupt and truncate (first of each)."""
    if surface == "v2":
        names = {"interrupt": "channel.interrupt", "truncate": "channel.barge_in_truncate"}
        got = {}
        for key, typ in names.items():
            ts = [e["t"] for e in srv.frames() if isinstance(e["frame"], dict) and e["frame"].get("type") == typ]
            got[key] = ts[0] if ts else None
        return got
    return {key: next((c["t"] for c in srv.rpc_calls("live/" + key)), None) for key in ("interrupt", "truncate")}


def _latencies(dev: SimDevice, lines: list[dict], srv: Any, index: dict, spk_wav: Path | None, frame_ms: int,
               surface: str = "live") -> dict:
    res: dict[str, Any] = {}
    launched = getattr(dev, "launched", None)
    ready = [l["_t"] for l in lines if l.get("ready")]
    # The server's "you are connected": v2 channel.opened, live the `ready` observation.
    opened_sent = [e["t"] for e in srv.sent_frames() if isinstance(e["frame"], dict) and (
        e["frame"].get("type") == "channel.opened" or e["frame"].get("observation") == "ready")]
    open_seen = [l["_t"] for l in lines if l.get("ev") == "state" and l.get("data") == "open"]
    if launched is not None:
        res["start"] = {
            "to_ready_ms": round((ready[0] - launched) * 1000, 1) if ready else None,
            "to_channel_opened_at_server_ms": round((opened_sent[0] - launched) * 1000, 1) if opened_sent else None,
            "to_open_on_device_ms": round((open_seen[0] - launched) * 1000, 1) if open_seen else None,
        }
    clock = next((l for l in lines if l.get("bench") == "clock"), None)
    worlds = [l for l in lines if l.get("bench") == "world"]
    if clock is None or not worlds:
        return res
    # The two clocks must be the same (CLOCK_MONOTONIC); otherwise align on the line's arrival.
    if abs(clock["ticks_us"] / 1e6 - clock["_t"]) > 0.5:
        clock = dict(clock, ticks_us=clock["_t"] * 1e6)
        res["clock_note"] = "ticks_us is not the host's monotonic clock: aligned on the line's arrival (about 1 ms error)"
    rx0 = worlds[-1]["rx0"]
    spk_start = max((w["spk_start"] for w in worlds), default=-1)
    rec_base = next((w["rec_base"] for w in worlds if w.get("rec_base") is not None), None)
    t0 = clock["t0_us"]

    def world_index_time(g: float) -> float:
        return _host_time_of_ticks(clock, t0 + g * 125 / 3)

    # Capture to server: uplink frames of the question turn, located in the question WAV.
    question = _wav_pcm(paths.FIXTURES / "user_question.wav")
    lat = []
    for t_at, pcm in _uplink_frames(srv, surface):
        if not any(pcm):
            continue
        i = question.find(pcm)
        if i < 0 or i % 2 or question.find(pcm, i + 1) >= 0:
            continue  # not the question (the barge-in speech), or not unique
        last = rx0 + i // 2 + len(pcm) // 2  # the frame's last sample is readable from here
        lat.append((t_at - world_index_time(last)) * 1000)
    res["capture_to_server_ms"] = _stats(lat)
    # Barge-in.
    if spk_start >= 0:
        onset_ms = index.get("user_interrupt.wav", {}).get("onset_ms", 0.0)
        onset_g = spk_start + INJECT_AT_MS * 24 + onset_ms * 24
        t_onset = world_index_time(onset_g)
        b: dict[str, Any] = {}
        decided = [l["_t"] for l in lines if l.get("ev") == "barge_in"]
        events = {l["data"].get("reason") for l in lines if l.get("ev") == "barge_in"}
        got = _control_times(srv, surface)
        if decided:
            # The decision instant: the earliest sign of it seen outside the board, the barge_in
            # line on the host or channel.interrupt (queued at the decision) at the server. It
            # is at most a pipe hop (well under a millisecond) after the real decision.
            t_dec = min([decided[0]] + ([got["interrupt"]] if got["interrupt"] is not None else []))
            b["reason"] = sorted(events)
            b["onset_to_vad_decision_ms"] = round((t_dec - t_onset) * 1000, 1)
            if got["truncate"] is not None:
                b["vad_decision_to_truncate_at_server_ms"] = round((got["truncate"] - t_dec) * 1000, 2)
            if got["interrupt"] is not None:
                b["vad_decision_to_interrupt_at_server_ms"] = round((got["interrupt"] - t_dec) * 1000, 2)
        if got["truncate"] is not None:
            b["onset_to_truncate_at_server_ms"] = round((got["truncate"] - t_onset) * 1000, 1)
        # The server's answer to the truncate, as the board reported it (same name on both surfaces).
        truncated = [l["data"] for l in lines if l.get("ev") == "assistant_transcript_truncated"]
        b["truncate_accepted"] = bool(truncated)
        if truncated:
            b["audio_played_ms"] = truncated[0].get("audio_played_ms")
        if spk_wav is not None and spk_wav.exists() and rec_base is not None:
            rec = _wav_pcm(spk_wav)
            n = len(rec) // 2
            start = max(0, int(onset_g - rec_base))
            last = -1
            mv = memoryview(rec).cast("h")
            for k in range(n - 1, start - 1, -1):
                if mv[k]:
                    last = k
                    break
            if last >= 0:
                b["onset_to_speaker_silent_ms"] = round((rec_base + last + 1 - onset_g) / 24, 1)
            else:
                b["onset_to_speaker_silent_ms"] = 0.0  # already silent at the onset
        res["barge_in"] = b
    res["frame_ms"] = frame_ms
    return res


def min_heap(lo_k: int = 100, hi_k: int = 400, step_k: int = 8, log=print, image: mpy.Image | None = None,
             surface: str = "live") -> dict:
    """The smallest heap (a multiple of step_k from lo_k) at which the demo completes, by
    bisection with plain SimDevice runs (no probe, no recording), on `image` (default the
    stock binary). Assumes success is monotonic in the heap size; {"min_heap_k": None} when
    even hi_k fails."""
    runs: list[dict] = []

    def ok(k: int) -> bool:
        r = run(f"{k}K", probe=False, record=False, image=image, surface=surface)
        runs.append({"heap_k": k, "completed": r["completed"], **({"failure": r["failure"]} if "failure" in r else {})})
        log(f"  demo at {k}K: {'completes' if r['completed'] else 'fails: ' + r.get('failure', '?')}")
        return r["completed"]

    steps = (hi_k - lo_k) // step_k
    if not ok(lo_k + steps * step_k):
        return {"min_heap_k": None, "searched": [lo_k, hi_k, step_k], "runs": runs}
    lo, hi = -1, steps  # lo: known to fail (or below range), hi: known to pass
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(lo_k + mid * step_k):
            hi = mid
        else:
            lo = mid
    return {"min_heap_k": lo_k + hi * step_k, "searched": [lo_k, hi_k, step_k], "runs": runs}
