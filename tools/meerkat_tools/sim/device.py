# The simulated board's main program. Runs on the MicroPython unix port (the default) or CPython,
# with tools/meerkat_tools/fakes first on the module path so that `machine` is the fake board:
#
#   micropython -X heapsize=110K device.py spec.json
#
# spec.json: {"config": <config.json contents>, "board": "sim", "world": <simworld settings>,
#             "seconds": N}. Output: one JSON object per line on stdout, {"ev": name, "data": ..}
# for device events, {"log": line} for log lines, {"ready": true} once running, and
# {"summary": stats, "exit": reason} at the end. Input: JSON commands on stdin, one per line:
# {"cmd": "send_text", "text": ..}, start_talking, stop_talking, interrupt, close, stats.
# With config trace_ms the firmware's trace lines (trace.py, "~t...") come out on stdout as
# they do on a board's console, plus the simulator's ground truth: "~tx T ITEM TRUE_MS", for
# each barge-in, what the fake speaker really clocked out of the item (simtruth.py).
import json
import select
import sys

import asyncio
import simworld
from meerkat_rt import app, log
import simtruth
from meerkat_rt.compat import sleep_ms, ticks_diff, ticks_ms


def out(obj):
    _write(obj)
    sys.stdout.write("\n")


def _write(obj):
    # json.dumps, written piece by piece: a 4 KB transcript in an event would need two 4 KB
    # blocks at once for json.dumps, which the board's fragmented heap does not have.
    w = sys.stdout.write
    t = type(obj)
    if t is dict:
        w("{")
        sep = ""
        for k in obj:
            w(sep + json.dumps(str(k)) + ":")
            _write(obj[k])
            sep = ","
        w("}")
    elif t is list or t is tuple:
        w("[")
        for i, v in enumerate(obj):
            if i:
                w(",")
            _write(v)
        w("]")
    elif t is str and len(obj) > 256:
        w('"')
        for i in range(0, len(obj), 256):
            w(json.dumps(obj[i : i + 256])[1:-1])
        w('"')
    else:
        w(json.dumps(obj))


def _event(name, data):
    out({"ev": name, "data": data})


def _command(dev, line):
    try:
        msg = json.loads(line)
        cmd = msg["cmd"]
        if cmd == "send_text":
            dev.send_text(msg["text"])
        elif cmd in ("start_talking", "stop_talking", "interrupt"):
            getattr(dev, cmd)()
        elif cmd == "stats":
            out({"stats": dev.stats()})
        elif cmd == "close":
            return True
        else:
            out({"error": "unknown command " + cmd})
    except Exception as exc:  # a bad command must not stop the board
        out({"error": "command failed: %r" % (exc,)})
    return False


class _Stdin:
    """Command lines from stdin without blocking. The unix port's sys.stdin is unbuffered: poll
    then readline. CPython's buffers whole pipe reads, which poll cannot see: there the bytes
    are read from the descriptor and split here, so two commands that arrive together are
    both taken."""

    def __init__(self):
        self.p = select.poll()
        self.p.register(sys.stdin, select.POLLIN)
        self.raw = sys.implementation.name != "micropython"
        self.pending = b""
        self.open = True

    def lines(self):
        out = []
        if not self.open or not self.p.poll(0):
            return out
        if not self.raw:
            line = sys.stdin.readline()
            if line:
                out.append(line)
            else:
                self._closed()
            return out
        import os

        data = os.read(sys.stdin.fileno(), 4096)
        if not data:
            self._closed()
            data = b"\n" if self.pending else b""
        self.pending += data
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            out.append(line.decode("utf-8", "replace") + "\n")
        return out

    def _closed(self):
        self.p.unregister(sys.stdin)  # stdin closed: keep running until the time is up
        self.open = False


async def _supervise(dev, seconds):
    # Commands from stdin (polled: the unix port's stdin is not an asyncio stream) and the
    # run-time limit; closes the channel cleanly on either.
    stdin = _Stdin()
    t0 = ticks_ms()
    reason = "seconds"
    while dev.channel.state not in ("closed", "error"):
        closing = False
        for line in stdin.lines():
            if _command(dev, line):
                closing = True
                break
        if closing:
            reason = "close"
            break
        if seconds and ticks_diff(ticks_ms(), t0) >= seconds * 1000:
            break
        await sleep_ms(20)
    else:
        reason = dev.channel.state
    if dev.channel.state not in ("closed", "error"):
        await dev.close()
    return reason


async def main(spec):
    dev = app.Device(spec["config"], spec.get("board", "sim"), _event)
    simtruth.attach(dev, _event)
    out({"ready": True})
    run = asyncio.create_task(dev.run())
    reason = await _supervise(dev, spec.get("seconds", 0))
    try:
        await asyncio.wait_for(run, 5)
    except asyncio.TimeoutError:
        reason += "+timeout"
    simworld.get().close()  # finish the speaker recording (a valid WAV)
    out({"summary": dev.stats(), "exit": reason})


def _start():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    log.sink = lambda line: out({"log": line})
    simworld.configure(**spec.get("world", {}))
    asyncio.run(main(spec))


_start()
