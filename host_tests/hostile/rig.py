"""The simulated board against the scripted server, and the checks every fault test ends with.

`device(srv, tmp_path)` starts the firmware as a simulated board (the reference image,
frozen32 at 110K, or the stock binary where it cannot be built; or CPython) configured for
`srv` (its surface pinned unless the test says otherwise), and yields (dev, recording). When the
block ends without an error, the board is stopped and `clean()` runs: the host read every line
the board printed, the board did not crash or run out of memory, no token the server minted
appears in its logs, and the server's scripts ran to the end."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from harness import FAST_RECONNECT, reference_image
from meerkat_tools.sim import SimDevice

from hostile import Hostile

RUNTIMES = ["micropython", "cpython"]


@contextlib.contextmanager
def device(srv: Hostile, tmp_path: Path, runtime: str = "micropython", world: dict | None = None,
           seconds: float = 90, tolerate: tuple[str, ...] = (), **config: Any) -> Iterator[tuple[SimDevice, Path]]:
    """tolerate: log lines (substrings) that clean() lets through, e.g. a MemoryError of the
    simulator's own event handler that a test provokes on purpose."""
    host, port = srv.rpc_address
    cfg: dict[str, Any] = {
        "server": {"rpc": f"{host}:{port}", "surface": srv.surface, "timeout_ms": 5000, "open_timeout_ms": 10000},
        "target": srv.target,
        "board": "sim",
        "log_level": "info",
        "reconnect": dict(FAST_RECONNECT),
    }
    if "server" in config:
        cfg["server"].update(config.pop("server"))
    cfg.update(config)
    recording = tmp_path / "speaker.wav"
    w = {"record": str(recording)}
    w.update(world or {})
    kw: dict[str, Any] = {}
    heap = None
    if runtime == "micropython":
        kw["image"], heap = reference_image()
    dev = SimDevice(cfg, w, runtime=runtime, heap=heap, seconds=seconds, **kw)
    try:
        with dev:
            yield dev, recording
        clean(dev, srv, tolerate)
    finally:
        # On failure pytest shows this: what the board said, how it ended, what the server saw.
        print("--- device log ---")
        for line in dev.logs()[-80:]:
            print(line)
        print("--- device summary ---", dev.summary, dev.exit_reason)
        if dev.stderr:
            print("--- device stderr ---\n" + dev.stderr[-3000:])
        print("--- server: rpc", [c.method for c in srv.rpc()], "connections", len(srv.conns), "errors", srv.errors)
        print("--- server: client frames", [(f.conn, f.type or f.op) for f in srv.frames if not f.is_audio][-40:])


def clean(dev: SimDevice, srv: Hostile, tolerate: tuple[str, ...] = ()) -> None:
    raw = [line for line in dev.lines if "raw" in line]
    assert raw == [], f"lines the host could not read: {raw[:3]}"
    assert dev.summary is not None, "no summary line: the board did not end cleanly"
    for bad in ("Traceback", "MemoryError", "UnicodeDecodeError"):
        assert bad not in dev.stderr, dev.stderr[-2000:]
        assert not [line for line in dev.logs() if bad in line and not any(t in line for t in tolerate)], bad
    logs = "\n".join(dev.logs())
    for token in srv.tokens:
        assert token not in logs, "a token the server minted is in the device's log"
    assert srv.errors == [], srv.errors


def stats(dev: SimDevice, timeout: float = 10) -> dict:
    """The board's stats() now."""
    n = len([line for line in dev.lines if "stats" in line])
    dev.send("stats")
    return dev.wait_for(lambda: [line["stats"] for line in dev.lines if "stats" in line][n:], timeout, "stats")[0]


def send_text(dev: SimDevice, srv: Hostile, text: str, timeout: float = 10) -> None:
    """The app sends a text turn; returns once the server has it.

    One command at a time, each awaited by its effect: on CPython the simulated board reads
    stdin through Python's buffer, which select() does not see, so a command that reaches the
    pipe together with the one before it waits there until another one comes
    (tools/meerkat_tools/sim/device.py)."""
    n = len([f for f in srv.frames if f.text_input is not None])
    dev.send("send_text", text=text)
    srv.wait_for(lambda: len([f for f in srv.frames if f.text_input is not None]) > n, timeout, f"the text {text!r}")


def wait_stats(dev: SimDevice, predicate: Callable[[dict], bool], timeout: float, what: str = "stats") -> dict:
    """Poll stats() until predicate holds (the board keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        s = stats(dev)
        if predicate(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {json.dumps(s)[:1500]}")
        dev.wait_for(lambda: False, 0.1, raise_on_timeout=False)


def opened(dev: SimDevice, n: int = 1, timeout: float = 20) -> None:
    dev.wait_event("state", timeout, n=n, where=lambda s: s == "open")


def absent(recording: bytes, audio: bytes, step_ms: int = 100) -> bool:
    """No 20 ms piece of `audio` (taken every step_ms) is anywhere in the recording."""
    return all(recording.find(audio[i : i + 960]) < 0 for i in range(0, len(audio) - 960, step_ms * 48))


def max_message(dev: SimDevice, timeout: float = 15) -> int:
    """The board's max_message, from the log line of an oversized drop (the default depends on
    the board's memory budget, so tests read it instead of assuming it)."""
    import re

    def found():
        for line in dev.logs():
            m = re.search(r"larger than the (\d+)-byte frame buffer", line)
            if m:
                return int(m.group(1))
        return None

    return dev.wait_for(found, timeout, "the log line of an oversized drop")


def one_line_each(logs: list[str]) -> bool:
    """Every log record is one console line: no server text put a newline, a carriage return
    or another control character into it unescaped (on a board, log lines go to the console
    as they are; the simulator wraps each record in JSON, which would hide a forged line)."""
    bad = [line for line in logs if any(c < " " or c == "\x7f" for c in line)]
    assert bad == [], f"log records with raw control characters: {bad[:3]}"
    return True
