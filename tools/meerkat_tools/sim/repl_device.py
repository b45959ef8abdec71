# The simulated board's main program with the live REPL (`meerkat-sim --repl`). MicroPython
# unix port only (aiorepl needs MicroPython's asyncio and micropython.kbd_intr):
#
#   micropython -X heapsize=110K -m repl_device spec.json
#
# The same spec as device.py. The device runs exactly as `meerkat_rt.start()` runs it on a
# board: its log lines on stdout, micropython-lib's aiorepl reading standard input with the
# "--> " prompt, where status(), say("text"), talk(), stop(), interrupt() and close() act on
# it. Trace lines (config trace_ms) go to stdout too, as on a board's console, with the
# simulator's truth of each truncate (simtruth.py). When the device
# stops (close(), a fatal error, or the spec's seconds) one JSON line {"summary": stats,
# "exit": reason} ends the output.
import json
import sys

import asyncio
import simtruth
import simworld
import meerkat_rt
from meerkat_rt import app
from meerkat_rt.compat import sleep_ms

_reason = ["close"]


async def _attach_truth():
    # Created before start()'s asyncio.run(), so it runs first, when start() has just made the
    # Device: the simulator's ground truth joins its trace (simtruth.py).
    dev = app._device
    if dev is not None and dev.trace is not None:
        simtruth.attach(dev, dev.trace.on_event)


async def _watchdog(seconds):
    # A run-time limit, so that a board whose controller went away does not run for ever.
    # Created before start()'s asyncio.run(): MicroPython has one task queue for every run.
    t = 0
    while t < seconds * 1000:
        await sleep_ms(100)
        t += 100
    dev = app._device
    if dev is not None and dev.state not in ("closed", "error"):
        _reason[0] = "seconds"
        await dev.close()


def _start():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    simworld.configure(**spec.get("world", {}))
    asyncio.create_task(_attach_truth())
    if spec.get("seconds"):
        asyncio.create_task(_watchdog(spec["seconds"]))
    dev = meerkat_rt.start(spec["config"], spec.get("board", "sim"), spec.get("repl", True))
    simworld.get().close()  # finish the speaker recording (a valid WAV)
    summary = dev.stats() if dev is not None else None
    reason = _reason[0] if summary is None or summary["state"] != "error" else "error"
    print()  # after a "--> " prompt the REPL left without a newline
    print(json.dumps({"summary": summary, "exit": reason}))


_start()
