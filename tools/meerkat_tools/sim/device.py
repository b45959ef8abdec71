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
