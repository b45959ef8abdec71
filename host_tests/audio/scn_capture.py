# A real-time audio scenario: see scn_common.py.
import simworld
from meerkat_rt import fast
from meerkat_rt.compat import sleep_ms, ticks_diff, ticks_ms
from wavfile import open_wav
from scn_common import FRAME, _board, _capture, _identity, _mem

########################################################################
# Capture: bit-exact PCM, exact counters under a stalled consumer and a gated span.


async def run(fix, boards):
    simworld.configure(mic_wav=fix + "/user_hello.wav")
    b = _board(boards, mic=True)
    ring = b["ring"]
    mic = b["mic_i2s"]
    cap = _capture(b)
    wav, _, _, _, nbytes = open_wav(fix + "/user_hello.wav")
    base = wav.tell()
    ref = bytearray(FRAME)
    dec = bytearray(FRAME)
    sent = []
    mismatches = 0
    identity_ok = True
    t0 = ticks_ms()
    while True:
        t = ticks_diff(ticks_ms(), t0)
        if t >= 2200:
            break
        busy = cap.poll(ticks_ms())
        identity_ok = identity_ok and _identity(ring)
        if 1300 <= t < 1700 and not ring.held:
            ring.hold()  # the gate: frames stay in the ring, unsent
        if t >= 1700 and ring.held:
            ring.release(120)  # pre-roll: the newest 3 frames go out
        if not 600 <= t < 1000:  # the consumer stalls for 400 ms (the ring holds 240)
            i = ring.peek()
            while i >= 0:
                seq = ring.seq(i)
                fast.b64_decode(dec, FRAME, 0, ring.slot_buffer, ring.slot_offset(i), ring.slot_len)
                wav.seek(base + seq * FRAME)
                n = wav.readinto(ref) or 0
                fast.scale(ref, n, (FRAME - n) // 2, 0)  # silence after the end of the file
                if dec != ref:
                    mismatches += 1
                sent.append(seq)
                ring.mark_sent()
                identity_ok = identity_ok and _identity(ring)
                i = ring.peek()
        await sleep_ms(0 if busy else 5)
    # The microphone stops; the consumer takes the rest.
    while ring.peek() >= 0:
        sent.append(ring.seq(ring.peek()))
        ring.mark_sent()
    wav.close()
    simworld.get().close()
    gaps = []
    for k in range(1, len(sent)):
        if sent[k] != sent[k - 1] + 1:
            gaps.append([sent[k - 1] + 1, sent[k]])  # missing seqs [a, b)
    return {
        "frames": len(sent), "first": sent[0] if sent else -1, "gaps": gaps, "mismatches": mismatches,
        "ordered": sent == sorted(sent) and len(set(sent)) == len(sent), "identity": identity_ok,
        "captured": ring.captured, "sent": ring.sent, "dropped": ring.dropped,
        "discarded": ring.discarded, "pending": ring.pending, "overruns": mic.overruns,
        "wav_frames": nbytes // FRAME, "mem_free": _mem(),
    }


