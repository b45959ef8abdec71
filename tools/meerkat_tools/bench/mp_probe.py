# The simulated board with a benchmark probe, run on the unix port by meerkat-bench instead of
# `device` (same arguments, same output, plus {"bench": ...} lines):
#
#   micropython -X heapsize=110K -m mp_probe spec.json
#
# Before the board's main program starts, this queues one more asyncio task. The board's
# asyncio.run() runs it beside the device (MicroPython's asyncio has one task queue), and it:
#   - every PERIOD ms: gc.collect(), then gc.mem_free(); prints {"bench": "heap", ...} whenever
#     that is a new low (the heap low-water of live data, sampled at await points); off when
#     the spec says {"bench": {"heap": false}} (the latency runs: no collections added);
#   - prints {"bench": "clock", ...} once: time.ticks_us() beside simworld.now_us() (the fake
#     world's clock), so world sample indices map onto the host's time.monotonic();
#   - prints {"bench": "world", ...} when the world's microphone start (rx0) or the speaker's
#     first audio (spk_start) becomes known, with where the speaker recording starts.
# The probe costs about 1.4 KB of heap (this module and its task), included in the figures.
import gc
import json
import sys
import time

import asyncio
import simworld

PERIOD = 20


async def _probe(heap):
    # heap: sample the heap (gc.collect() every PERIOD ms) or only follow the world's clock.
    low = 1 << 30
    seen = None
    clock = False
    while True:
        if heap:
            gc.collect()
            free = gc.mem_free()
            if free < low:
                low = free
                print(json.dumps({"bench": "heap", "free": free, "used": gc.mem_alloc(), "t_us": time.ticks_us()}))
        w = simworld.world
        if w is not None:
            if not clock:
                clock = True
                print(json.dumps({"bench": "clock", "ticks_us": time.ticks_us(), "world_us": simworld.now_us(), "t0_us": w.t0}))
            rec_base = None
            if w.tx is not None and w.rec is not None:
                rec_base = w.tx.g - (w.recbytes // 2 + w.recn)  # world index of recording sample 0
            state = (w.rx0, w.spk_start, rec_base if seen is None or seen[2] is None else seen[2])
            if state != seen:
                seen = state
                print(json.dumps({"bench": "world", "rx0": w.rx0, "spk_start": w.spk_start, "rec_base": state[2]}))
        await asyncio.sleep_ms(PERIOD)


def _start():
    with open(sys.argv[1]) as f:
        heap = json.load(f).get("bench", {}).get("heap", True)
    asyncio.create_task(_probe(heap))


_start()

import device  # noqa: E402,F401  the board's main program: runs until the board stops
