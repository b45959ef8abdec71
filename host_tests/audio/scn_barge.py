# A real-time audio scenario: see scn_common.py.
import json

import simworld
from meerkat_rt.compat import sleep_ms, ticks_diff, ticks_ms
from scn_common import Feeder, _board, _capture, _mem, _player

########################################################################
# Barge-in: the reply plays, its echo comes back at -20 dB (20 ms late); a user talks over it
# from inject_at_ms. No onset before the user, one soon after; then stop_now and the cursor.


async def run(fix, boards, mode, inject_at="2500"):
    at = int(inject_at)
    with open(fix + "/index.json") as f:
        user_onset = json.load(f)["user_interrupt.wav"]["onset_ms"]
    w = simworld.configure(echo_db=-20, echo_delay_ms=20, inject_wav=fix + "/user_interrupt.wav", inject_at_ms=at)
    b = _board(boards, mic=True, speaker=True, player=True)
    spk = b["spk_i2s"]
    ring = b["ring"]
    p = _player(b, mode)
    from meerkat_rt.vad import ONSET, VAD

    vad = VAD(coupling_db=b["echo_coupling_db"])
    cap = _capture(b, vad, p)
    ring.hold()  # half duplex: the microphone is gated while the reply plays
    task = None
    if p.mode == "drain":
        import asyncio

        task = asyncio.create_task(p.run())
    feed = Feeder(p)
    feed.open(fix + "/assistant_reply.wav")
    onset = None
    heard = truth = -1
    thresholds = 0
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < at + 1500:
        feed.poll("reply")
        busy = cap.poll(ticks_ms())
        busy |= p.poll()
        thresholds = max(thresholds, vad.threshold)
        if cap.take_vad_event() == ONSET:
            simworld.service()
            truth = spk.played // 48
            heard = p.heard_ms("reply")
            p.stop_now()
            ring.release(300)
            # Audio time of the onset relative to the speaker's first sample (world indices).
            onset = ((w.rx0 + (cap.event_block + 1) * 240) - w.spk_start) // 24
            break
        await sleep_ms(0 if busy else 5)
    if task is not None:
        task.cancel()
    feed.close()
    w.close()
    return {
        "mode": p.mode, "onset_ms": onset, "user_ms": at + user_onset,
        "latency_ms": None if onset is None else onset - at - user_onset,
        "heard_ms": heard, "truth_ms": truth, "coupling_db": vad.coupling_db(), "max_threshold": thresholds,
        "preroll_frames": ring.pending, "underruns": p.underruns, "mem_free": _mem(),
    }


