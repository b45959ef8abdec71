# A real-time audio scenario: see scn_common.py.
import json

import simworld
from meerkat_rt.compat import sleep_ms, ticks_diff, ticks_ms
from meerkat_rt.vad import ONSET, VAD
from scn_common import _board, _capture

########################################################################
# VAD onset on the fixtures, against fixtures/index.json.


async def run(fix, boards):
    with open(fix + "/index.json") as f:
        index = json.load(f)
    out = {}
    for name in ("user_hello.wav", "user_question.wav", "user_interrupt.wav"):
        truth = index[name]["onset_ms"]
        simworld.configure(mic_wav=fix + "/" + name)
        b = _board(boards, mic=True, ring=2)  # only the VAD matters here
        ring = b["ring"]
        cap = _capture(b, VAD(coupling_db=b["echo_coupling_db"]))
        found = None
        t0 = ticks_ms()
        while ticks_diff(ticks_ms(), t0) < truth + 600:
            busy = cap.poll(ticks_ms())
            ring.discard_pending()
            if cap.take_vad_event() == ONSET:
                found = (cap.event_block + 1) * 10  # audio time at the end of the onset block
                break
            await sleep_ms(0 if busy else 5)
        out[name] = {"truth_ms": truth, "onset_ms": found, "latency_ms": None if found is None else found - truth}
        simworld.get().close()
    return out


