# meerkat_rt.capture with a scripted microphone: partial reads of any size, 16-bit copy and
# 32-bit shift + clamp, DC blocker, VAD blocks independent of the frame, timestamps, block
# capture times whatever the polling, arming (the ESP32's ASYNCIO switch), and no allocation
# per frame.
import binascii
import struct

from meerkat_rt import fast
from meerkat_rt.capture import Capture
from meerkat_rt.ring import FrameRing
from meerkat_rt.vad import ONSET

MP_HEAP = "160K"


class Mic:
    """Hands out `data` in reads of the given sizes (cycled), then nothing."""

    def __init__(self, data, sizes=(1000,)):
        self.data = data
        self.pos = 0
        self.sizes = sizes
        self.i = 0
        self.armed = False

    def readinto(self, buf):
        k = min(self.sizes[self.i % len(self.sizes)], len(buf), len(self.data) - self.pos)
        self.i += 1
        fast.copy(buf, 0, self.data, self.pos, k)
        self.pos += k
        return k

    def ioctl(self, req, flags):
        self.armed = req == 3
        return flags


def _samples(n, seed=3, amp=20000):
    out = bytearray(2 * n)
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        struct.pack_into("<h", out, 2 * i, (x >> 8) % (2 * amp) - amp)
    return out


def _frames(r):
    out = []
    while True:
        i = r.peek()
        if i < 0:
            return out
        off = r.slot_offset(i)
        out.append(binascii.a2b_base64(bytes(r.slot_buffer[off : off + r.slot_len])))
        r.mark_sent()


def _drain(cap, now=0):
    while cap.poll(now):
        pass


def test_16_bit_partial_reads_make_exact_frames():
    src = _samples(960 * 5 + 100)
    mic = Mic(src, sizes=(2, 478, 1000, 962, 6, 3000))
    r = FrameRing(8, 1920)
    cap = Capture(mic, r)
    assert mic.armed
    _drain(cap)
    frames = _frames(r)
    assert len(frames) == 5 and cap.frames == 5 and cap.blocks == 20
    for k in range(5):
        assert frames[k] == src[1920 * k : 1920 * (k + 1)], k


def test_32_bit_slots_are_shifted_and_clamped():
    values = []
    x = 11
    for i in range(960 * 2):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        values.append(((x >> 3) % (1 << 28) - (1 << 27)) << 4)  # 32-bit words, wide range
    raw = struct.pack("<%di" % len(values), *values)
    for shift in (16, 14, 12):
        mic = Mic(raw, sizes=(4, 1916, 8, 3840))
        r = FrameRing(4, 1920)
        cap = Capture(mic, r, bits=32, shift=shift)
        _drain(cap)
        got = b"".join(_frames(r))
        want = struct.pack("<%dh" % len(values), *[max(-32768, min(32767, v >> shift)) for v in values])
        assert got == want, shift


def test_highpass_removes_dc():
    dc = struct.pack("<%dh" % 4800, *([6000] * 4800))
    r = FrameRing(8, 1920)
    cap = Capture(Mic(dc), r, highpass=True)
    _drain(cap)
    last = _frames(r)[-1]
    tail = struct.unpack("<960h", last)
    assert max(abs(v) for v in tail) < 300
    assert cap.level < 300


def test_vad_runs_per_block_with_the_speaker_level_and_reports_events():
    quiet = bytearray(480 * 30)  # 300 ms of silence
    loud = _samples(240 * 30, amp=8000)  # then 300 ms of "speech"
    calls = []

    def speaker_level():
        calls.append(1)
        return 0

    class V:
        def __init__(self):
            self.levels = []

        def update(self, mic, speaker):
            self.levels.append(mic)
            return ONSET if len(self.levels) == 33 else 0

    v = V()
    r = FrameRing(20, 960)  # 20 ms frames: two 10 ms blocks each
    cap = Capture(Mic(quiet + loud, sizes=(700,)), r, v, speaker_level=speaker_level)
    _drain(cap)
    assert len(v.levels) == 60 and len(calls) == 60
    assert v.levels[0] == 0 and v.levels[59] > 2000
    assert cap.take_vad_event() == ONSET and cap.event_block == 32
    assert cap.take_vad_event() == 0


class ClockedMic:
    """Samples at 24 per ms of a virtual clock, readable in whole DMA buffers of 256 frames
    (as on the ESP32), sample i of the WAV-like source = i % 3000 + 1 (a rising saw)."""

    def __init__(self):
        self.now = 0
        self.pos = 0

    def readinto(self, buf):
        ready = self.now * 24 // 256 * 256
        k = min(ready - self.pos, len(buf) // 2)
        for j in range(k):
            struct.pack_into("<h", buf, 2 * j, (self.pos + j) % 3000 + 1)
        self.pos += k
        return 2 * k

    def ioctl(self, req, flags):
        return flags


class History:
    """A speaker history that records what the capture asks it."""

    def __init__(self):
        self.asked = []

    def level(self, t0, ms):
        self.asked.append((t0, ms))
        return 1000


class Steady:
    def level(self, t0, ms):
        return 1000


def _block_times(pattern):
    # Poll a ClockedMic for 3 s with the given steps (ms, cycled); the block times the VAD saw.
    mic = ClockedMic()
    times = []
    spk = History()

    class V:
        def update(self, m, s):
            times.append(cap.block_t)
            return 0

    cap = Capture(mic, FrameRing(4, 1920), V(), speaker=spk)
    i = 0
    while mic.now < 3000:
        mic.now += pattern[i % len(pattern)]
        i += 1
        while cap.poll(mic.now):
            cap.ring.mark_sent()
    return times, spk.asked


def test_block_times_follow_the_samples_not_the_polls():
    # Block k's last sample is captured at 10 (k + 1) ms. Polled every 2 ms, or irregularly
    # with 45 ms stalls (a GC pause, a TLS write: four blocks then arrive at once), each block
    # gets the same capture time, to within a millisecond once the first DMA reads are in.
    steady, asked = _block_times((2,))
    stalled, _ = _block_times((1, 3, 7, 2, 45, 1, 1, 4, 6, 2, 5, 3, 45, 2))
    assert len(steady) >= 290 and len(stalled) >= 290
    for times in (steady, stalled):
        for k in range(20, 290):
            assert 0 <= times[k] - 10 * (k + 1) <= 1, (k, times[k])
    # The speaker is asked what it played over each block's own capture time.
    assert asked[100] == (steady[100] - 10, 10)


def test_frame_times_and_ring_overflow_never_blocks():
    src = _samples(960 * 10)
    r = FrameRing(3, 1920)
    cap = Capture(Mic(src, sizes=(1920,)), r)
    while cap.poll(5000):
        pass
    assert r.captured == 10 and r.dropped == 7 and r.pending == 3
    assert r.time(r.peek()) == 5000 - 40
    try:
        Capture(Mic(src), FrameRing(3, 966))  # 20.1 ms: not whole 10 ms blocks
    except ValueError:
        pass
    else:
        raise AssertionError("frame must be whole blocks")


def test_steady_state_capture_allocates_nothing_per_frame():
    import gc

    if not hasattr(gc, "mem_alloc"):
        return  # CPython: nothing to measure

    class Endless:
        def __init__(self):
            self.src = _samples(960)

        def readinto(self, buf):
            n = len(buf)
            fast.copy(buf, 0, self.src, 0, n)
            return n

        def ioctl(self, req, flags):
            return flags

    from meerkat_rt.vad import VAD

    for bits in (16, 32):
        r = FrameRing(4, 1920)
        cap = Capture(Endless(), r, VAD(), bits=bits, shift=14 if bits == 32 else 0, highpass=True,
                      speaker=Steady() if bits == 16 else None, speaker_level=lambda: 100)
        for _ in range(4):
            cap.poll(0)
            r.mark_sent()
        gc.collect()
        before = gc.mem_alloc()  # type: ignore[attr-defined]
        frames = cap.frames
        for t in range(40):
            cap.poll(t)
            r.mark_sent()
        used = gc.mem_alloc() - before  # type: ignore[attr-defined]
        assert cap.frames - frames >= 10
        assert used == 0, (bits, used)
