"""Property tests (CPython, hypothesis) of the two buffers the audio path lives on: the uplink
ring's counting identity and send order under any sequence of operations, and the player's
streaming decoder under any split of the base64 text, with the cursor never ahead of the DAC."""

from __future__ import annotations

import binascii
import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from meerkat_rt.playback import Player
from meerkat_rt.ring import FrameRing

FRAME = 48  # 1 ms frames: small, the logic is the same


def _frame(seq):
    return struct.pack("<24h", *([seq & 0x7FFF] * 24))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 4)),
        st.tuples(st.just("take"), st.integers(1, 4)),
        st.tuples(st.just("hold"), st.just(0)),
        st.tuples(st.just("release"), st.integers(0, 6)),
        st.tuples(st.just("discard"), st.just(0)),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 6), ops)
def test_ring_identity_and_order_under_any_operations(slots, operations):
    r = FrameRing(slots, FRAME)
    seq = 0
    sent = []
    for op, n in operations:
        if op == "push":
            for _ in range(n):
                r.push_pcm(_frame(seq), 0, seq)
                seq += 1
        elif op == "take":
            for _ in range(n):
                i = r.peek()
                if i < 0:
                    break
                off = r.slot_offset(i)
                assert binascii.a2b_base64(bytes(r.slot_buffer[off : off + r.slot_len])) == _frame(r.seq(i))
                sent.append(r.seq(i))
                r.mark_sent()
        elif op == "hold":
            r.hold()
        elif op == "release":
            r.release(n)  # 1 ms frames: keep the newest n
        else:
            r.discard_pending()
        assert r.captured == seq == r.sent + r.dropped + r.discarded + r.pending
        assert 0 <= r.pending <= slots
        assert r.peek() == -1 or not r.held
    assert sent == sorted(set(sent)) and r.sent == len(sent)


class _Clock:
    now = 0

    def __call__(self):
        return self.now


class _DAC:
    def __init__(self, clock, ibuf):
        self.clock, self.ibuf, self.t = clock, ibuf, clock()
        self.queue = bytearray()
        self.out = bytearray()

    def _adv(self):
        c = min(len(self.queue), 48 * (self.clock() - self.t))
        self.out += self.queue[:c]
        del self.queue[:c]
        self.t = self.clock()

    def write(self, buf, off, n):
        self._adv()
        k = min(n, self.ibuf - len(self.queue)) & ~1
        self.queue += bytes(buf[off : off + k])
        return k

    def ioctl(self, req, flags):
        return flags


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", None]), st.integers(1, 60)), min_size=1, max_size=8),
    st.lists(st.integers(1, 900), min_size=1, max_size=12),
    st.integers(0, 2**31),
)
def test_player_plays_exactly_what_was_fed_in_any_pieces(chunks, cuts, seed):
    clock = _Clock()
    dac = _DAC(clock, 2048)
    p = Player(dac, 9600, ibuf=2048, mode="poll", margin_ms=0)
    p.clock = clock
    rand = random.Random(seed)
    expect = bytearray()
    owner = []  # (item, bytes) in play order
    for item, ms in chunks:
        pcm = bytearray(rand.randbytes(48 * ms))
        text = binascii.b2a_base64(bytes(pcm), newline=False)
        while p.space() < len(pcm):  # the caller keeps space() ahead of what it feeds
            clock.now += 5
            p.poll()
        p.begin_chunk()
        off = 0
        k = 0
        while off < len(text):
            n = min(cuts[k % len(cuts)], len(text) - off)
            assert p.feed_b64(text, off, n)
            off += n
            k += 1
        # The ring tracks at most 4 runs of items: a 5th interleaved item is refused, counted.
        full = p._sc == 4 and p._ids[p._se[(p._sh + 3) % 4]] != item
        before = (p.received_ms(item), p.dropped)
        got = p.commit_chunk(item, 0)
        if full:
            assert got == -2 and p.dropped == before[1] + 1
            continue
        assert got == ms * 48 and p.received_ms(item) == before[0] + ms
        expect += pcm
        owner.append((item, len(pcm)))
        p.poll()
        for it in ("a", "b", None):
            assert p.heard_ms(it) <= _truth(dac, owner, it)
    for _ in range(2000):
        clock.now += 5
        p.poll()
        dac._adv()
        if p.idle():
            break
    assert dac.out == expect
    for it in ("a", "b", None):
        assert p.finished(it)


def _truth(dac, owner, item):
    # ms of `item` that the DAC has clocked out: its bytes among the first len(dac.out).
    done = len(dac.out)
    pos = 0
    got = 0
    for it, n in owner:
        if it == item:
            got += max(0, min(n, done - pos))
        pos += n
    return got // 48
