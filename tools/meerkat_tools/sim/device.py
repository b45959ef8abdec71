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
# they do on a board's console, plus this program's ground truth: "~tx T ITEM TRUE_MS", for
# each barge-in, what the fake speaker really clocked out of the item (see Truth).
import json
import select
import sys

import asyncio
import simworld
from meerkat_rt import app, log
from meerkat_rt.compat import sleep_ms, ticks_diff, ticks_ms


def out(obj):
    print(json.dumps(obj))


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


async def _supervise(dev, seconds):
    # Commands from stdin (polled: the unix port's stdin is not an asyncio stream) and the
    # run-time limit; closes the channel cleanly on either.
    p = select.poll()
    p.register(sys.stdin, select.POLLIN)
    t0 = ticks_ms()
    reason = "seconds"
    while dev.channel.state not in ("closed", "error"):
        if p.poll(0):
            line = sys.stdin.readline()
            if not line:
                p.unregister(sys.stdin)  # stdin closed: keep running until the time is up
                p = select.poll()
            elif _command(dev, line):
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


class Truth:
    """The speaker's true play position of each item, for the timeline's truncate points.

    The firmware only models what the DAC played (Player: bytes the driver accepted minus a
    model of its DMA queue); the fake speaker knows (machine.I2S.played: bytes clocked out).
    Both count one stream of bytes: the player's stream position of an item's first byte
    (_end - _acc while nothing of it was flushed) is where it sits among the fake's written
    bytes; what the fake played beyond it (less what deinit() flushed before the item
    started) is the item's truth. Sampled with the trace, so an item is placed within one
    trace period of its first byte; reads the player's private arrays (simulator only)."""

    def __init__(self, player, tracer):
        self.player = player
        self.tracer = tracer
        self.starts = {}  # item id -> stream position of its first byte, net of earlier flushes

    def watch(self):
        p = self.player
        spk = simworld.get().tx
        if spk is None:
            return
        for e in range(len(p._ids)):
            item = p._ids[e]
            if type(item) is str and item not in self.starts and p._acc[e] > 0 and not p._stop[e]:
                if len(self.starts) >= 16:
                    self.starts.pop(next(iter(self.starts)))
                self.starts[item] = (p._end[e] - p._acc[e]) - spk.flushed

    def event(self, name, data):
        if name != "barge_in" or not data.get("item_id"):
            return
        item = data["item_id"]
        w = simworld.get()
        spk = w.tx
        if item not in self.starts or spk is None:
            return
        w.service()  # the fake speaker up to now: the cursor was taken microseconds ago
        true_ms = max(0, spk.played - self.starts[item]) // 48
        self.tracer.line("~tx %d %s %d" % (self.tracer.now(), item.replace(" ", "_"), true_ms))


async def main(spec):
    dev = app.Device(spec["config"], spec.get("board", "sim"), _event)
    if dev.trace is not None:
        truth = Truth(dev.player, dev.trace)
        dev.trace.hook = truth.watch

        def traced(name, data):
            truth.event(name, data)
            _event(name, data)

        dev.trace.on_event = traced
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
