# meerkat_rt.ring: slots, send cursor, gating with pre-roll, and the exact counting identity
# captured == sent + dropped + discarded + pending, checked after every operation.
import binascii

from meerkat_rt.ring import FrameRing

FRAME = 1920  # 40 ms


def _frame(seq):
    # A recognisable frame: its sequence number repeated.
    b = bytearray(FRAME)
    for i in range(0, FRAME, 2):
        b[i] = seq & 0xFF
        b[i + 1] = (seq >> 8) & 0xFF
    return b


def _identity(r):
    assert r.captured == r.sent + r.dropped + r.discarded + r.pending, (
        r.captured, r.sent, r.dropped, r.discarded, r.pending)
    assert 0 <= r.pending <= r.slots


def _take(r):
    i = r.peek()
    if i < 0:
        return None
    off = r.slot_offset(i)
    pcm = binascii.a2b_base64(bytes(r.slot_buffer[off : off + r.slot_len]))
    seq = r.seq(i)
    assert pcm == _frame(seq), seq
    r.mark_sent()
    _identity(r)
    return seq


def test_slots_hold_base64_of_each_frame_with_seq_and_time():
    r = FrameRing(4, FRAME)
    assert r.slot_len == 2560 and len(r.slot_buffer) == 4 * 2560 and r.frame_ms == 40
    for s in range(3):
        i = r.push_pcm(_frame(s), 0, 1000 + 40 * s)
        assert r.seq(i) == s and r.time(i) == 1000 + 40 * s
        _identity(r)
    assert [_take(r), _take(r), _take(r), _take(r)] == [0, 1, 2, None]
    assert (r.captured, r.sent, r.pending) == (3, 3, 0)


def test_push_at_an_offset_of_a_larger_buffer():
    r = FrameRing(2, 6)
    i = r.push_pcm(b"xx\x00\x01\x02\x03\x04\x05yy", 2, 0)
    off = r.slot_offset(i)
    assert bytes(r.slot_buffer[off : off + 8]) == binascii.b2a_base64(b"\x00\x01\x02\x03\x04\x05")[:8]


def test_full_ring_drops_the_oldest_and_counts_it():
    r = FrameRing(4, FRAME)
    for s in range(7):
        r.push_pcm(_frame(s), 0, s)
        _identity(r)
    assert (r.captured, r.dropped, r.pending, r.discarded) == (7, 3, 4, 0)
    assert [_take(r) for _ in range(5)] == [3, 4, 5, 6, None]


def test_stalled_consumer_identity_and_order():
    # A consumer that stalls for long stretches: everything it gets is in order, nothing twice,
    # and the counters add up exactly at every step.
    r = FrameRing(5, FRAME)
    x = 7
    got = []
    for s in range(400):
        r.push_pcm(_frame(s), 0, s)
        _identity(r)
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        if (s // 37) % 3 != 1:  # stalled one stretch in three
            for _ in range((x >> 16) % 3):
                v = _take(r)
                if v is not None:
                    got.append(v)
    while True:
        v = _take(r)
        if v is None:
            break
        got.append(v)
    assert got == sorted(got) and len(set(got)) == len(got)
    assert r.sent == len(got) and r.dropped == 400 - len(got) and r.dropped > 50
    assert r.pending == 0 and r.discarded == 0


def test_hold_keeps_frames_unsent_and_release_keeps_the_preroll():
    r = FrameRing(8, FRAME)
    r.push_pcm(_frame(0), 0, 0)
    assert _take(r) == 0
    r.hold()
    for s in range(1, 11):  # 10 frames while held: 8 fit, 2 overwritten = discarded
        r.push_pcm(_frame(s), 0, s)
        assert r.peek() == -1
        _identity(r)
    assert (r.pending, r.discarded, r.dropped) == (8, 2, 0)
    r.mark_sent()  # ignored while held
    assert r.sent == 1
    r.release(100)  # 100 ms = 2.5 frames -> the newest 3 are kept
    _identity(r)
    assert (r.pending, r.discarded) == (3, 7)
    assert [_take(r), _take(r), _take(r), _take(r)] == [8, 9, 10, None]
    r.release(0)  # not held: a no-op that does not touch pending frames
    r.push_pcm(_frame(11), 0, 11)
    r.release(0)
    assert r.pending == 1 and _take(r) == 11


def test_release_zero_discards_everything_held_and_discard_pending():
    r = FrameRing(4, FRAME)
    r.push_pcm(_frame(0), 0, 0)
    r.hold()
    r.push_pcm(_frame(1), 0, 0)
    r.release(0)
    _identity(r)
    assert (r.pending, r.discarded, r.peek()) == (0, 2, -1)
    r.push_pcm(_frame(2), 0, 0)
    r.push_pcm(_frame(3), 0, 0)
    r.discard_pending()
    _identity(r)
    assert (r.pending, r.discarded, r.held) == (0, 4, False)
    r.hold()
    r.push_pcm(_frame(4), 0, 0)
    r.discard_pending()
    assert r.held and r.discarded == 5
    _identity(r)


def test_bad_sizes_are_refused():
    for slots, frame in ((4, 1000), (1, 1920)):
        try:
            FrameRing(slots, frame)
        except ValueError:
            continue
        raise AssertionError((slots, frame))


def test_push_and_send_allocate_nothing():
    import gc

    if not hasattr(gc, "mem_alloc"):
        return  # CPython: nothing to measure
    r = FrameRing(4, FRAME)
    pcm = _frame(1)
    r.push_pcm(pcm, 0, 0)
    r.mark_sent()
    gc.collect()
    before = gc.mem_alloc()  # type: ignore[attr-defined]
    for s in range(50):
        r.push_pcm(pcm, 0, s)
        i = r.peek()
        r.seq(i)
        r.slot_offset(i)
        r.mark_sent()
    assert gc.mem_alloc() - before == 0, gc.mem_alloc() - before  # type: ignore[attr-defined]


def test_a_codec_switch_re_encodes_the_pending_frames_in_place():
    # Surface auto tries live first (raw slots); a v2 server found then needs base64. What the
    # microphone captured meanwhile is kept: every pending frame, in order, wrapped or not.
    from meerkat_rt.ring import B64, PCM

    for head in range(6):
        r = FrameRing(6, FRAME, bytearray(6 * FRAME * 4 // 3), codec=PCM)
        for s in range(head):  # move the head round the ring
            r.push_pcm(_frame(r.captured), 0, s)
            r.mark_sent()
        for s in range(5):
            r.push_pcm(_frame(r.captured), 0, 40 * s)  # a frame's content is its seq
        r.set_codec(B64)
        _identity(r)
        assert r.discarded == 0 and r.pending == 5 and r.slot_len == FRAME * 4 // 3
        assert [_take(r) for _ in range(6)] == [head, head + 1, head + 2, head + 3, head + 4, None], head
        # And back (base64 to raw), with frames pending again.
        for s in range(4):
            r.push_pcm(_frame(r.captured), 0, 0)
        r.set_codec(PCM)
        got = []
        while r.peek() >= 0:
            off = r.slot_offset(r.peek())
            got.append(bytes(r.slot_buffer[off : off + FRAME]) == _frame(r.seq(r.peek())))
            r.mark_sent()
        assert got == [True] * 4 and r.discarded == 0, (head, got)
