"""What the server received and sent, in memory for tests and on disk with `--record DIR`.

On disk: `frames.jsonl` (every client message with its receive time), `sent.jsonl` (every server
frame), `rpc.jsonl` (every JSON-RPC request with its response), `input.wav` (the input audio
the provider accepted, all channels in arrival order, 24 kHz mono PCM16). In memory: the same
lists, plus waiting helpers so tests block on a condition with a timeout instead of sleeping.
Channels are keyed by their v2 connection number (int) or their live channel_id (str). The
loop thread writes; any thread may read.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import wave
from collections import deque
from pathlib import Path
from typing import Any, Callable

from . import wire


class Recorder:
    def __init__(self, record_dir: str | Path | None = None, keep: int = 200_000):
        self._cond = threading.Condition(threading.RLock())
        self._received: deque[dict] = deque(maxlen=keep)
        self._sent: deque[dict] = deque(maxlen=keep)
        self._rpc: deque[dict] = deque(maxlen=keep)
        self._pcm: dict[int | str, bytearray] = {}
        self._pcm_all = bytearray()
        self._binary: dict[int | str, int] = {}  # bytes of binary frames received, per channel
        self._hooks: list[Callable[[dict], None]] = []
        self._waiters: set[asyncio.Event] = set()
        self.loop_thread: int | None = None
        self._version = 0  # bumped on every change; waiters re-check when it moves
        self.dir = Path(record_dir) if record_dir is not None else None
        self._frames_file = self._sent_file = self._rpc_file = None
        self._wav: wave.Wave_write | None = None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._frames_file = open(self.dir / "frames.jsonl", "a", encoding="utf-8")
            self._sent_file = open(self.dir / "sent.jsonl", "a", encoding="utf-8")
            self._rpc_file = open(self.dir / "rpc.jsonl", "a", encoding="utf-8")
            self._wav = wave.open(str(self.dir / "input.wav"), "wb")
            self._wav.setnchannels(wire.CHANNELS)
            self._wav.setsampwidth(2)
            self._wav.setframerate(wire.SAMPLE_RATE_HZ)

    # -- writing (loop thread) ----------------------------------------------------------

    def received(self, channel: int | str, kind: str, data: bytes) -> dict:
        entry: dict[str, Any] = {"t": time.monotonic(), "channel": channel, "kind": kind}
        if kind == "text":
            try:
                text = data.decode("utf-8")
                try:
                    entry["frame"] = json.loads(text)
                except json.JSONDecodeError:
                    entry["frame"] = text
            except UnicodeDecodeError:
                entry["frame"] = None
        else:
            entry["frame"] = None
            entry["size"] = len(data)
        with self._cond:
            if kind == "binary":
                # where this frame's bytes start among the channel's binary frames (live: raw PCM)
                entry["offset"] = self._binary.get(channel, 0)
                self._binary[channel] = entry["offset"] + len(data)
            self._received.append(entry)
            if self._frames_file is not None:
                self._frames_file.write(json.dumps(entry, separators=(",", ":")) + "\n")
                self._frames_file.flush()
        self._notify(entry)
        return entry

    def sent(self, channel: int | str, frame: Any, kind: str = "text") -> None:
        entry = {"t": time.monotonic(), "channel": channel, "kind": kind, "frame": frame}
        with self._cond:
            self._sent.append(entry)
            if self._sent_file is not None and kind == "text":
                self._sent_file.write(json.dumps(entry, separators=(",", ":")) + "\n")
                self._sent_file.flush()
        self._notify(None)

    def rpc(self, method: str, request: Any, response: Any, started: float) -> None:
        entry = {"t": started, "t_done": time.monotonic(), "method": method, "request": request,
                 "response": response}
        with self._cond:
            self._rpc.append(entry)
            if self._rpc_file is not None:
                self._rpc_file.write(json.dumps(entry, separators=(",", ":")) + "\n")
                self._rpc_file.flush()
        self._notify(None)

    def audio(self, channel: int | str, pcm: bytes) -> None:
        with self._cond:
            self._pcm.setdefault(channel, bytearray()).extend(pcm)
            self._pcm_all.extend(pcm)
            if self._wav is not None:
                self._wav.writeframes(pcm)
        self._notify(None)

    def changed(self) -> None:
        """Something observable changed (a channel opened or ended): wake the waiters."""
        self._notify(None)

    def _notify(self, entry: dict | None) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()
        for event in list(self._waiters):
            event.set()
        if entry is not None:
            for hook in list(self._hooks):
                hook(entry)

    def close(self) -> None:
        with self._cond:
            for f in (self._frames_file, self._sent_file, self._rpc_file):
                if f is not None:
                    f.close()
            if self._wav is not None:
                self._wav.close()
            self._frames_file = self._sent_file = self._rpc_file = self._wav = None

    # -- reading (any thread) -----------------------------------------------------------

    def frames(self, channel: int | str | None = None) -> list[dict]:
        with self._cond:
            return [e for e in self._received if channel is None or e["channel"] == channel]

    def sent_frames(self, channel: int | str | None = None) -> list[dict]:
        with self._cond:
            return [e for e in self._sent if channel is None or e["channel"] == channel]

    def rpc_calls(self, method: str | None = None) -> list[dict]:
        with self._cond:
            return [e for e in self._rpc if method is None or e["method"] == method]

    def input_pcm(self, channel: int | str | None = None) -> bytes:
        with self._cond:
            if channel is None:
                return bytes(self._pcm_all)
            return bytes(self._pcm.get(channel, b""))

    def on_frame(self, hook: Callable[[dict], None]) -> Callable[[], None]:
        """Call `hook(entry)` in the server's loop thread for every received client message;
        returns a function that removes the hook."""
        self._hooks.append(hook)
        return lambda: self._hooks.remove(hook)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
        """Block (not in the loop thread) until `predicate()` is truthy; returns its value.
        The predicate runs without any lock held, so it may call anything."""
        if self.loop_thread is not None and threading.get_ident() == self.loop_thread:
            raise RuntimeError("wait_for would block the server loop; use `await until(...)`")
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = self._version
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                name = what or getattr(predicate, "__name__", repr(predicate))
                raise TimeoutError(f"not within {timeout} s: {name}")
            with self._cond:
                if self._version == seen:
                    self._cond.wait(remaining)

    async def until(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
        """The same for code running in the server's loop."""
        deadline = time.monotonic() + timeout
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            while True:
                result = predicate()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"not within {timeout} s: {what or predicate}")
                event.clear()
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        finally:
            self._waiters.discard(event)
