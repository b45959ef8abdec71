# meerkat_rt.playback with a manual clock and a fake DAC that drains exactly 48 bytes/ms of
# that clock: streaming base64 decode, the per-item cursor against the DAC's truth, stop-now,
# late chunks, underruns, the output level, irq mode, gain, and no allocation in steady state.
import binascii
import struct

from meerkat_rt.playback import IRQ, POLL, Player

MP_HEAP = "160K"  # the test's own PCM references, on top of two players


class Clock:
    def __init__(self):
        self.now = 1000

    def __call__(self):
        return self.now


class DAC:
    """A TX I2S: an ibuf-byte queue drained at 48 bytes per ms of the clock; keeps what it played."""

    def __init__(self, clock, ibuf=4096, keep=True):
        self.clock = clock
        self.ibuf = ibuf
        self.q = self.played = self.flushed = self.inits = 0
        self.t = clock()
        self.out = bytearray() if keep else None
        self.queue = bytearray()
        self.handler = None
        self.pend = None

    def _adv(self):
        c = min(len(self.queue), 48 * (self.clock() - self.t))
        if self.out is not None:
            self.out += self.queue[:c]
        self.queue = self.queue[c:]  # (MicroPython's bytearray has no slice deletion)
        self.played += c
        self.t = self.clock()
        if self.pend is not None:
            self._fill()

    def _fill(self):
        buf, off, n = self.pend
        k = min(n, self.ibuf - len(self.queue))
        self.queue += bytes(buf[off : off + k])
        self.pend = (buf, off + k, n - k) if k < n else None
        if self.pend is None:
            self.handler(self)

    def write(self, buf, off=0, n=-1):
        self._adv()
        if self.handler is not None:
            self.pend = (buf, off, n)
            self._fill()
            return n
        k = min(n, self.ibuf - len(self.queue)) & ~1
        self.queue += bytes(buf[off : off + k])
        return k

    def ioctl(self, req, flags):
        return flags

    def irq(self, handler):
        self.handler = handler

    def deinit(self):
        self._adv()
        self.flushed += len(self.queue)
        self.queue = bytearray()
        self.pend = None

    def init(self, **kw):
        self.inits += 1
        self.handler = None


def _pcm(ms, seed=1, level=8000):
    out = bytearray(48 * ms)
    x = seed
    for i in range(0, len(out), 2):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        struct.pack_into("<h", out, i, (x >> 8) % (2 * level) - level)
    return out


def _player(mode=POLL, ibuf=4096, capacity=9600, keep=True, **kw):
    clock = Clock()
    dac = DAC(clock, ibuf, keep)
    p = Player(dac, capacity=capacity, ibuf=ibuf, mode=mode, margin_ms=0, reinit={}, **kw)
    p.clock = clock
    return p, dac, clock


def _chunk(p, item, pcm, pieces=(7, 1, 2, 3)):
    text = binascii.b2a_base64(bytes(pcm), newline=False)
    p.begin_chunk()
    off = 0
    for n in pieces:  # odd splits: partial quads carried between calls
        assert p.feed_b64(text, off, n)
        off += n
    assert p.feed_b64(text, off, len(text) - off)
    return p.commit_chunk(item, 0)


def _step(p, dac, clock, ms=1):
    clock.now += ms
    dac._adv()
    p.poll()


def test_streamed_base64_plays_exactly_the_pcm():
    p, dac, clock = _player()
    a = _pcm(100, 1)
    b = _pcm(60, 2)
    assert _chunk(p, "i1", a, (1, 2, 3, 5, 8, 13)) == 4800
    assert _chunk(p, "i1", b) == 2880
    assert p.received_ms("i1") == 160 and p.chunks == 2 and p.bytes == len(a) + len(b)
    for _ in range(200):
        _step(p, dac, clock)
    assert dac.out == a + b
    assert p.finished("i1") and p.idle() and p.played_ms("i1") == 160


def test_invalid_base64_is_refused():
    p, dac, clock = _player()
    for bad in (b"AB!D", b"AAA=AAAA", b"A==A"):
        p.begin_chunk()
        assert not p.feed_b64(bad, 0, len(bad)), bad
        p.abort_chunk()
    p.begin_chunk()  # padding, then more text in a later piece
    assert p.feed_b64(b"AAA=", 0, 4)
    assert not p.feed_b64(b"AAAA", 0, 4)
    p.abort_chunk()
    p.begin_chunk()  # cut short: one stray character left at the end
    assert p.feed_b64(b"AAAAA", 0, 5)
    assert p.commit_chunk("x", 0) == -1
    p.begin_chunk()  # unpadded ("AAAAAA==" without its padding): accepted
    assert p.feed_b64(b"AAAAAA", 0, 6)
    assert p.commit_chunk("x", 0) == 4 and p.bytes == 4
    p.begin_chunk()  # an odd byte count: the last byte is not a whole sample
    assert p.feed_b64(b"AAAA", 0, 4)
    assert p.commit_chunk("x", 0) == 2 and p.bytes == 6
    assert p.space() == 9600 - 6
    try:
        Player(DAC(Clock()), capacity=4800)
    except ValueError:
        pass
    else:
        raise AssertionError("a buffer smaller than a 200 ms chunk must be refused")


def test_space_covers_committed_and_tentative_audio():
    p, dac, clock = _player()
    text = binascii.b2a_base64(bytes(_pcm(100)), newline=False)  # 4800 bytes
    p.begin_chunk()
    assert p.feed_b64(text, 0, 3200) and p.space() == 9600 - 2400
    assert p.feed_b64(text, 3200, len(text) - 3200) and p.space() == 4800
    p.commit_chunk("a", 0)
    p.begin_chunk()
    assert p.feed_b64(text, 0, len(text)) and p.space() == 0
    assert not p.feed_b64(b"AAAA", 0, 4)  # beyond space(): refused, nothing overwritten
    p.abort_chunk()
    assert p.space() == 4800


def test_cursor_never_ahead_of_the_dac_and_close_behind():
    p, dac, clock = _player(ibuf=4096, capacity=14400, keep=False)
    pcm = _pcm(200, 5)
    worst = 0
    sent = 0
    for ms in range(1500):
        if sent < 1200 and p.space() >= len(pcm):
            _chunk(p, "r1", pcm)
            sent += 200
        _step(p, dac, clock)
        truth = dac.played // 48
        heard = p.heard_ms("r1")
        assert heard <= truth, (ms, heard, truth)
        worst = max(worst, truth - heard)
        assert heard <= p.received_ms("r1")
    assert worst <= 13, worst  # the slack: one DMA descriptor + 2 ms
    assert p.finished("r1") and p.heard_ms("r1") == 1200 and p.underruns == 0
    p.margin_ms = 100
    assert p.heard_ms("r1") == 1100


def test_items_in_sequence_current_item_and_finished():
    p, dac, clock = _player(ibuf=2048, capacity=14400)
    _chunk(p, "a", _pcm(100, 1))
    _chunk(p, "b", _pcm(150, 2))
    assert p.current_item() == "a" and not p.finished("a")
    for _ in range(140):
        _step(p, dac, clock)
    assert p.finished("a") and p.current_item() == "b"
    assert p.played_ms("a") == 100 and 0 < p.played_ms("b") < 40
    for _ in range(200):
        _step(p, dac, clock)
    assert p.finished("b") and p.current_item() == "b" and p.idle()
    assert p.finished("unknown") and p.heard_ms("unknown") == 0 and p.received_ms("unknown") == 0


def test_stop_now_flushes_and_drops_late_chunks():
    p, dac, clock = _player(ibuf=2048, capacity=14400)
    _chunk(p, "a", _pcm(200, 1))
    _chunk(p, "a", _pcm(80, 2))
    for _ in range(60):
        _step(p, dac, clock)
    truth = dac.played // 48
    heard = p.heard_ms("a")
    assert 0 <= truth - heard <= 13
    p.begin_chunk()  # a chunk being decoded when the user barges in
    assert p.feed_b64(b"AAAAAAAA", 0, 8)
    p.stop_now()
    assert dac.inits == 1 and dac.flushed > 0 and p.flushes == 1
    assert p.is_stopped("a") and p.idle() and p.space() == 14400
    assert p.feed_b64(b"AAAAAA", 0, 6) and p.commit_chunk("a", 0) == 0  # rest of the cut chunk
    assert _chunk(p, "a", _pcm(40)) == -2 and p.dropped == 1  # late audio of a stopped item
    for _ in range(100):
        _step(p, dac, clock)
    assert p.heard_ms("a") == heard and dac.played // 48 == truth  # nothing more of it played
    assert not p.finished("a")
    assert _chunk(p, "b", _pcm(40)) == 1920 and not p.is_stopped("b")
    for _ in range(60):
        _step(p, dac, clock)
    assert p.finished("b")
    # Anonymous audio is silenced too, but not blocked afterwards: without ids a late chunk and
    # the next response's look the same, and the channel decides which it wants.
    _chunk(p, None, _pcm(40))
    p.stop_now()
    assert p.idle() and not p.is_stopped(None)
    assert _chunk(p, None, _pcm(40)) == 1920


def test_underrun_inside_an_item_is_counted():
    p, dac, clock = _player()
    _chunk(p, "a", _pcm(50))
    for _ in range(120):
        _step(p, dac, clock)
    _chunk(p, "a", _pcm(50))  # the DAC ran dry in the middle of item a
    _step(p, dac, clock)
    assert p.underruns == 1
    for _ in range(120):
        _step(p, dac, clock)
    _chunk(p, "b", _pcm(50))  # a new item after silence is not an underrun
    _step(p, dac, clock)
    assert p.underruns == 1


def test_level_now_is_what_leaves_the_speaker_after_the_queue():
    p, dac, clock = _player(ibuf=4800, capacity=14400)
    _chunk(p, "a", bytearray(48 * 100) + _pcm(100, 3, level=8000))  # 100 ms silence, then loud
    _step(p, dac, clock)
    assert p.level_now() == 0  # the silence is playing, the loud part is queued
    # level_now() looks a little around the modelled play head (-13 ms .. +25 ms: the model
    # errs late, and the echo-aware VAD must not hear the speaker before it knows it plays).
    for _ in range(70):
        _step(p, dac, clock)
    assert p.level_now() == 0  # 25 ms before the loud part: still silence
    for _ in range(35):
        _step(p, dac, clock)
    assert 3000 < p.level_now() < 6000  # the loudest 10 ms mean |x| of uniform noise at +-8000
    for _ in range(120):
        _step(p, dac, clock)
    assert p.level_now() == 0  # drained


def test_level_is_what_played_by_wall_time():
    # level(t0, ms): the mean level of what the speaker played over that span of wall time (the
    # echo-aware VAD asks it for each microphone block): silence, then the loud part from the
    # moment the queue ahead of it drained, silence again where it ran dry, nothing after a stop.
    p, dac, clock = _player(ibuf=4800, capacity=14400)
    t0 = clock.now
    _chunk(p, "a", bytearray(48 * 50) + _pcm(100, 3, level=8000))  # 50 ms silence, 100 ms loud
    for _ in range(200):
        _step(p, dac, clock)
    assert p.level(t0, 40) == 0
    loud = p.level(t0 + 60, 10)
    assert 3000 < loud < 5000, loud  # mean |x| of uniform noise at +-8000
    assert p.level(t0 + 45, 10) * 2 <= loud + 200  # half silence, half loud
    assert p.level(t0 + 170, 20) == 0  # ran dry
    assert p.level(t0 - 500, 10) == 0  # before anything played, or forgotten
    t1 = clock.now
    _chunk(p, "b", _pcm(200, 4, level=8000))
    for _ in range(30):
        _step(p, dac, clock)
    assert p.level(t1 + 10, 10) > 3000
    p.stop_now()  # the queued rest is flushed: it never plays
    assert p.level(clock.now + 20, 10) == 0


def test_level_of_many_small_writes_is_their_mean_not_the_loudest():
    # Poll mode writes what the DMA took since the last pump: a millisecond or two at a time,
    # several writes per 5 ms cell of the history. The cell is their mean over its 5 ms; the
    # loudest piece read 3 dB high on speech (the VAD then learnt the echo coupling that much
    # low, and barged in on its own voice). Here every 5 ms is 1 ms loud and 4 ms silent.
    p, dac, clock = _player(ibuf=960, capacity=14400)
    pattern = bytearray()
    for i in range(40):
        pattern += _pcm(1, i + 1, level=8000) + bytearray(48 * 4)
    truth = sum(abs(v) for v in struct.unpack("<%dh" % (len(pattern) // 2), pattern)) // (len(pattern) // 2)
    _chunk(p, "a", pattern)
    t0 = clock.now
    for _ in range(250):
        _step(p, dac, clock)  # 1 ms: the poll writes the 48 bytes that drained
    assert 600 < truth < 1000, truth
    for start in range(t0 + 40, t0 + 180, 3):  # spans wholly inside the pattern, any phase
        level = p.level(start, 10)
        assert truth * 3 // 4 <= level <= truth * 5 // 4, (start - t0, level, truth)


def test_irq_mode_cursor_and_stop():
    p, dac, clock = _player(mode=IRQ, ibuf=2048, capacity=19200)
    assert dac.handler is not None
    pcm = _pcm(200, 4)
    _chunk(p, "a", pcm)
    _chunk(p, "a", pcm)
    for _ in range(250):
        _step(p, dac, clock)
        assert p.heard_ms("a") <= dac.played // 48
        assert dac.played // 48 - p.heard_ms("a") <= 13 + 20  # + one 20 ms block
    p.stop_now()
    assert dac.inits == 1 and dac.handler is not None  # irq mode restored after the re-init
    _chunk(p, "b", _pcm(100))
    for _ in range(150):
        _step(p, dac, clock)
    assert p.finished("b") and dac.out[-4800:] == _pcm(100)


def test_gain_scales_the_output():
    p, dac, clock = _player(gain_db=-6.02)
    pcm = _pcm(20, 7)
    _chunk(p, "a", pcm)
    for _ in range(40):
        _step(p, dac, clock)
    n = len(pcm) // 2
    got = struct.unpack("<%dh" % n, bytes(dac.out))
    want = struct.unpack("<%dh" % n, bytes(pcm))
    assert list(got) == [(v * 128) >> 8 for v in want]


def test_item_table_keeps_four_items():
    p, dac, clock = _player(capacity=19200)
    for name in ("a", "b", "c", "d"):
        assert _chunk(p, name, _pcm(20)) == 960
    assert _chunk(p, "e", _pcm(20)) == -2 and p.dropped == 1  # all four still queued
    for _ in range(200):
        _step(p, dac, clock)
    assert _chunk(p, "e", _pcm(20)) == 960  # replaces "a", the oldest
    assert p.received_ms("a") == 0 and p.received_ms("b") == 20


def test_steady_state_streaming_allocates_nothing():
    import gc

    if not hasattr(gc, "mem_alloc"):
        return  # CPython: nothing to measure
    p, dac, clock = _player(keep=False, capacity=9600)

    class Sink:  # a DAC that takes everything at once, allocation-free
        def write(self, buf, off, n):
            return n

    p.i2s = Sink()
    text = bytearray(binascii.b2a_base64(bytes(_pcm(40)), newline=False))
    for _ in range(3):
        p.begin_chunk()
        p.feed_b64(text, 0, 1001)
        p.feed_b64(text, 1001, len(text) - 1001)
        p.commit_chunk("a", 0)
        p.poll()
    gc.collect()
    before = gc.mem_alloc()  # type: ignore[attr-defined]
    for _ in range(20):
        p.begin_chunk()
        p.feed_b64(text, 0, 1001)
        p.feed_b64(text, 1001, len(text) - 1001)
        p.commit_chunk("a", 0)
        p.poll()
        p.heard_ms("a")
        p.level_now()
    used = gc.mem_alloc() - before  # type: ignore[attr-defined]
    assert used == 0, used
