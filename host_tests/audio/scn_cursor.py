# A real-time audio scenario: see scn_common.py.
import simworld
from meerkat_rt.compat import sleep_ms, ticks_diff, ticks_ms
from scn_common import Feeder, _board, _mem, _player

########################################################################
# Playback cursor: heard_ms against the fake speaker's samples clocked out, several items, each
# stopped at a pseudo-random moment.


async def run(fix, boards, mode, seed="1", items="4"):
    simworld.configure()
    b = _board(boards, speaker=True, ring=-1, player=True)
    spk = b["spk_i2s"]
    p = _player(b, mode)
    feed = Feeder(p)
    task = None
    if p.mode == "drain":
        import asyncio

        task = asyncio.create_task(p.run())
    x = int(seed)
    worst = -1
    least = 1 << 30
    total = 0
    count = 0
    ahead = 0  # samples where heard > truth (must stay 0)
    stops = []
    late_dropped = True
    for k in range(int(items)):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        stop_ms = 300 + (x >> 8) % 900
        item = "item_%d" % k
        t0 = ticks_ms()
        while not p.idle() and ticks_diff(ticks_ms(), t0) < 1000:  # the previous stop's flush
            p.poll()
            await sleep_ms(2)
        simworld.service()
        base = spk.played
        feed.open(fix + "/assistant_reply.wav")
        started = None
        while True:
            ms = feed.poll(item)
            if ms and started is None:
                started = ticks_ms()
            busy = p.poll()
            simworld.service()
            truth = (spk.played - base) // 48
            heard = p.heard_ms(item)
            err = truth - heard
            if err < 0:
                ahead += 1
            worst = max(worst, err)
            least = min(least, err)
            total += err
            count += 1
            if started is not None and ticks_diff(ticks_ms(), started) >= stop_ms:
                break
            await sleep_ms(0 if busy else 2)
        simworld.service()
        truth = (spk.played - base) // 48
        heard = p.heard_ms(item)
        p.stop_now()
        stops.append([stop_ms, heard, truth])
        late = feed.poll(item)  # a late chunk of the stopped item
        late_dropped = late_dropped and late == -2 and p.is_stopped(item)  # -2: dropped by the player
    feed.close()
    if task is not None:
        task.cancel()
    simworld.get().close()
    return {
        "mode": p.mode, "stops": stops, "err_min": least, "err_max": worst,
        "err_mean": total / max(count, 1), "samples": count, "ahead": ahead,
        "late_dropped": late_dropped, "underruns": p.underruns, "flushes": p.flushes,
        "dropped_chunks": p.dropped, "mem_free": _mem(),
    }


