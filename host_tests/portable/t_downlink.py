# meerkat_rt.downlink: server messages of both surfaces fed in arbitrary fragments, as the
# WebSocket delivers them, with the WebSocket's back-pressure (hold()) honoured: audio of any size
# streams through a small playback ring, escapes in base64 are undone, bad input is dropped and
# counted by reason, and the sink survives.
import binascii
import json

from meerkat_rt import downlink
from meerkat_rt.turns import PENDING
from meerkat_rt.live import protocol as live
from meerkat_rt.v2 import protocol as v2

MP_HEAP = "2M"  # the test builds 2 s chunks (256 KB of base64 and copies); the sink keeps none of it
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


class FakePlayer:
    """A playback ring of `capacity` PCM bytes: base64 text per chunk, decoded when made
    playable; play(n) stands for the speaker taking n bytes."""

    def __init__(self, capacity=1 << 20):
        self.capacity = capacity
        self.text = None  # base64 of the chunk in progress (None: no chunk)
        self.queued_bytes = 0
        self.items = []  # [item_id, pcm bytearray] in the order they became playable
        self.aborted = self.flushes = self.stops = 0

    def _tentative_text(self):
        return len(self.text) if self.text is not None else 0

    def tentative(self):
        return self._tentative_text() // 4 * 3

    def queued(self):
        return self.queued_bytes

    def space(self):
        return self.capacity - self.queued_bytes - (self._tentative_text() + 3) // 4 * 3

    def begin_chunk(self):
        assert self.text is None, "begin_chunk twice without commit/abort"
        self.text = bytearray()

    def feed_b64(self, buf, off, n):
        assert self.text is not None
        part = bytes(buf[off : off + n])
        assert (self._tentative_text() + n + 3) // 4 * 3 <= self.space() + self.tentative() + 3, "overran space()"
        self.text += part
        return all(c in _ALPHABET for c in part)

    def _add(self, item, pcm):
        if self.items and self.items[-1][0] == item:
            self.items[-1][1].extend(pcm)
        else:
            self.items.append([item, bytearray(pcm)])
        self.queued_bytes += len(pcm)
        return len(pcm)

    def flush_partial(self, item):
        k = len(self.text) // 4 * 4
        if not k:
            return 0
        pcm = binascii.a2b_base64(bytes(self.text[:k]))
        self.text = self.text[k:]
        self.flushes += 1
        return self._add(item, pcm)

    def commit_chunk(self, item, index):
        text = bytes(self.text)
        self.text = None
        if len(text) % 4 == 1:
            return -1
        text += b"=" * (-len(text) % 4)
        return self._add(item, binascii.a2b_base64(text)) if text else 0

    def abort_chunk(self):
        if self.text is not None:
            self.aborted += 1
        self.text = None

    def rename(self, old, new):
        if any(i[0] == new for i in self.items):
            return False
        for i in self.items:
            if i[0] == old:
                i[0] = new
        return True

    def retire(self, item):
        for i in self.items:
            if i[0] == item:
                i[0] = "retired"

    def stop_now(self):
        self.stops += 1

    def play(self, n):
        self.queued_bytes -= min(n, self.queued_bytes)

    def pcm(self, item=None):
        return b"".join(bytes(i[1]) for i in self.items if item is None or i[0] == item)


class FakeTurns:
    def __init__(self, accept=True, early=downlink.WANT, assumed=None):
        self.accept = accept
        self.decision = early
        self.assumption = assumed
        self.audio = []
        self.ids = []
        self.stale = 0
        self.barge_ins = 0

    def early(self):
        return self.decision

    def assumed(self):
        return self.assumption

    def on_audio(self, item_id, content_index, response_id):
        self.ids.append((item_id, content_index, response_id))
        return self.accept

    def audio_done(self, ms):
        self.audio.append(ms)

    def stale_played(self):
        self.stale += 1


def _b64(pcm):
    return binascii.b2a_base64(pcm, newline=False).decode()


def _v2_audio(pcm, item_id="item_1", order="natural", spaced=False, inner_ids=False, data=None):
    data = _b64(pcm) if data is None else data
    chunk = '"chunk":{"mime_type":"audio/pcm","sample_rate_hz":24000,"channels":1,"data":"%s"%s}' % (
        data,
        ',"item_id":"%s"' % item_id if inner_ids else "",
    )
    ids = '"item_id":"%s","response_id":"resp_1","content_index":0' % item_id
    if inner_ids:
        ids = '"response_id":"resp_1"'
    if order == "natural":
        text = '{"type":"channel.event","event":{"type":"output_audio_chunk",%s,%s}}' % (ids, chunk)
    else:  # data first, type last
        text = '{"event":{%s,%s,"type":"output_audio_chunk"},"type":"channel.event"}' % (chunk, ids)
    if spaced:
        text = text.replace('":', '" : ')
    return text.encode()


def _live_audio(pcm, item_id="item_2", response_id="resp_2", data=None):
    # Meerkat's field order: data first, the ids after it.
    data = _b64(pcm) if data is None else data
    return (
        '{"observation":"assistant_audio_chunk","data":"%s","sample_rate_hz":24000,"channels":1,'
        '"response_id":"%s","item_id":"%s","content_index":0}' % (data, response_id, item_id)
    ).encode()


def _pcm(n, seed):
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def _feed(sink, msg, sizes, is_text=True, player=None):
    # As the WebSocket does: no hand-off while the sink holds; a holding sink with a player
    # makes the "speaker" play 480 bytes (10 ms) and tries again.
    buf = bytearray(len(msg) + 7)
    buf[3 : 3 + len(msg)] = msg
    off = 3
    i = 0
    end = 3 + len(msg)
    spins = 0
    while off < end:
        if sink.hold():
            assert player is not None and spins < 100000, "the sink holds for good"
            player.play(480)
            spins += 1
            continue
        n = min(sizes[i % len(sizes)], end - off)
        sink.feed(buf, off, n, off == 3, off + n == end, is_text)
        off += n
        i += 1


def _sink(codec=v2, capacity=1024, turns=None, ring=1 << 20):
    player = FakePlayer(ring)
    frames = []
    turns = turns or FakeTurns()
    return downlink.Downlink(player, codec, frames.append, turns, bytearray(capacity)), player, turns, frames


def test_audio_streams_through_in_any_fragmentation():
    for sizes in ([100000], [1], [3], [7, 1, 13], [64], [501]):
        for order in ("natural", "data_first"):
            for spaced in (False, True):
                sink, player, turns, frames = _sink()
                pcm = _pcm(2400, len(sizes))  # 50 ms: 3200 base64 characters, three times the buffer
                _feed(sink, _v2_audio(pcm, order=order, spaced=spaced), sizes)
                assert player.items == [["item_1", bytearray(pcm)]], (sizes, order, spaced)
                assert turns.audio == [len(pcm)] and frames == [] and sink.dropped == 0


def test_live_audio_streams_with_its_ids_after_the_data():
    for sizes in ([100000], [1], [7, 1, 13], [500]):
        sink, player, turns, frames = _sink(live)
        pcm = _pcm(4800, 2)
        _feed(sink, _live_audio(pcm), sizes)
        assert player.items == [["item_2", bytearray(pcm)]] and turns.ids == [("item_2", 0, "resp_2")]
        assert frames == [] and sink.dropped == 0


def test_ids_inside_the_chunk_and_no_ids():
    sink, player, turns, frames = _sink()
    _feed(sink, _v2_audio(_pcm(960, 1), "item_9", inner_ids=True), [50])
    assert turns.ids[0] == ("item_9", 0, "resp_1")
    plain = b'{"type":"channel.event","event":{"type":"output_audio_chunk","chunk":{"mime_type":"audio/pcm","sample_rate_hz":24000,"channels":1,"data":"AAAA"}}}'
    _feed(sink, plain, [40])
    assert turns.ids[1] == (None, 0, None) and player.items[-1] == [None, bytearray(3)]


def test_skeleton_cache_skips_parsing_for_same_item():
    sink, player, turns, frames = _sink()
    parsed = []
    original = downlink.Downlink._parse

    def counting_parse(self, buf, n):
        parsed.append(n)
        return original(self, buf, n)

    sink._parse = lambda buf, n: counting_parse(sink, buf, n)
    for i in range(5):
        _feed(sink, _v2_audio(_pcm(1920, i)), [256])
    _feed(sink, _v2_audio(_pcm(1920, 9), "item_2"), [256])
    assert len(parsed) == 2, parsed  # one parse per distinct skeleton
    assert [i[0] for i in player.items] == ["item_1", "item_2"]


def test_a_chunk_ten_times_the_ring_plays_through_it():
    # 2 s of audio into a 200 ms ring: made playable while it streams, the socket held while
    # the ring is full; every byte arrives, in order, under the right item.
    for codec, msg_of in ((v2, _v2_audio), (live, _live_audio)):
        turns = FakeTurns(assumed=PENDING)  # the first chunk of a reply: its item not known yet
        sink, player, turns, frames = _sink(codec, ring=9600, turns=turns)
        pcm = _pcm(96000, 5)
        item = "item_1" if codec is v2 else "item_2"
        _feed(sink, msg_of(pcm, item), [1024], player=player)
        assert player.pcm() == pcm and player.flushes > 5
        # streamed under PENDING, then renamed when the ids arrived
        assert [i[0] for i in player.items] == [item], player.items[0][0]
        assert sum(turns.audio) == len(pcm) and sink.dropped == 0


def test_a_wrong_guess_of_the_streaming_item_is_never_renamed_onto_the_right_one():
    # The ledger guessed the item of the last audio ("item_0", still playing); the chunk is
    # another item's. Renaming item_0's entry would give the new item item_0's audio too (a
    # cursor above what was heard): the streamed head stays item_0's, the rest is the item's,
    # counted as misattributed. A PENDING guess whose item already has audio is retired.
    for guess, head in (("item_0", "item_0"), (PENDING, "retired")):
        sink, player, turns, frames = _sink(ring=9600, turns=FakeTurns(assumed=guess))
        player.items.append(["item_1", bytearray(2)])  # (for PENDING: the item has audio already)
        pcm = _pcm(96000, 6)
        _feed(sink, _v2_audio(pcm, "item_1"), [1024], player=player)
        names = [i[0] for i in player.items[1:]]
        assert names[0] == head and names[-1] == "item_1" and set(names) == {head, "item_1"}, names
        assert player.pcm()[2:] == pcm and sink.drops["misattributed"] == 1


def test_escapes_in_the_base64_are_undone():
    pcm = _pcm(3000, 7)
    text = _b64(pcm)
    assert "/" in text and "A" in text
    escaped = text.replace("/", "\\/").replace("A", "\\u0041", 3)
    for sizes in ([100000], [1], [2], [5], [13]):
        sink, player, turns, frames = _sink()
        _feed(sink, _v2_audio(b"", data=escaped), sizes)
        assert player.pcm() == pcm, sizes
        assert sink.dropped == 0


def test_unpadded_base64_is_accepted():
    pcm = _pcm(100, 3)  # 100 bytes: base64 ends in "=="
    text = _b64(pcm).rstrip("=")
    sink, player, turns, frames = _sink(live)
    _feed(sink, _live_audio(b"", data=text), [7])
    assert player.pcm() == pcm and sink.dropped == 0


def test_other_frames_are_parsed_and_dispatched_up_to_max_message():
    sink, player, turns, frames = _sink(capacity=8192)
    sent = [
        {"type": "channel.event", "event": {"type": "output_text_delta", "delta": "Hi " * 50}},
        {"type": "channel.event", "event": {"type": "input_transcript_final", "text": "long " * 1500}},
        {"type": "channel.status", "status": {"state": "ready", "attempt_count": 0}},
        {"type": "channel.error", "code": "audio_format_mismatch", "message": "m"},
        {"type": "channel.closed", "reason": "client_closed"},
    ]
    for f in sent:
        _feed(sink, json.dumps(f).encode(), [333])
    assert frames == sent
    assert sink.frames == 5 and sink.dropped == 0


def test_bad_input_is_dropped_counted_by_reason_and_survived():
    sink, player, turns, frames = _sink(capacity=512)
    _feed(sink, b"not json at all", [5])
    _feed(sink, json.dumps({"type": "channel.event", "event": {"type": "output_text_delta", "delta": "x" * 2000}}).encode(), [100])
    _feed(sink, b"\x00\x01binary", [3], is_text=False)
    _feed(sink, _v2_audio(b"", data="!!!!" + _b64(_pcm(300, 3))), [64])
    _feed(sink, _v2_audio(_pcm(300, 4)).replace(b"24000", b"16000"), [64])
    _feed(sink, _v2_audio(b"", data='AAAA\\"BBBB'), [64])  # an escaped quote: not audio, not the end
    _feed(sink, _v2_audio(b"", data="AAAAB"), [64])  # one stray character
    assert sink.drops["malformed"] == 1 and sink.drops["oversized"] == 1 and sink.drops["binary"] == 1
    assert sink.drops["bad_base64"] == 3 and sink.drops["bad_format"] == 1
    assert sink.dropped == 7, sink.drops
    assert player.items == [] and player.text is None
    # ...and the next good frames still get through
    _feed(sink, _v2_audio(_pcm(96, 5)), [64])
    _feed(sink, b'{"type":"channel.event","event":{"type":"turn_completed"}}', [64])
    assert len(player.items) == 1 and frames[-1]["event"]["type"] == "turn_completed"


def test_unknown_events_are_counted_not_dropped():
    sink, player, turns, frames = _sink()
    _feed(sink, b'{"type":"channel.event","event":{"type":"future_thing","x":1}}', [10])
    assert sink.unknown == 1 and sink.dropped == 0 and frames[0]["event"]["type"] == "future_thing"


def test_rejected_audio_is_aborted():
    sink, player, turns, frames = _sink(turns=FakeTurns(accept=False))
    _feed(sink, _v2_audio(_pcm(480, 6)), [128])
    assert player.items == [] and player.aborted == 1 and turns.audio == []


def test_audio_the_ledger_drops_early_is_never_decoded():
    sink, player, turns, frames = _sink(turns=FakeTurns(accept=False, early=downlink.DROP))
    _feed(sink, _v2_audio(_pcm(96000, 6)), [1024], player=player)
    assert player.items == [] and turns.ids == [("item_1", 0, "resp_1")] and sink.dropped == 0


def test_streamed_audio_that_turns_out_late_is_silenced():
    # WANT (the ledger saw no reason to doubt), streamed, then its ids say: a stopped response.
    sink, player, turns, frames = _sink(live, ring=9600, turns=FakeTurns(accept=False, assumed="item_1"))
    _feed(sink, _live_audio(_pcm(48000, 1)), [1024], player=player)
    assert turns.stale == 1 and sink.drops["stale_played"] == 1


def test_undecided_audio_bigger_than_the_ring_keeps_its_head():
    # WAIT (live, after a barge-in): decoded tentatively; nothing playable to drain, so the rest
    # is skipped rather than holding the socket for good; wanted after all: the head plays.
    sink, player, turns, frames = _sink(live, ring=9600, turns=FakeTurns(early=downlink.WAIT))
    pcm = _pcm(48000, 2)
    _feed(sink, _live_audio(pcm), [1024], player=player)
    assert sink.drops["overflow"] == 1
    head = player.pcm("item_2")
    assert 0 < len(head) < len(pcm) and pcm.startswith(head)


def test_no_message_is_taken_while_the_ring_is_full():
    # After a chunk that filled the ring, the next message may begin with audio: the sink holds
    # until the speaker made room (a message's tail, after its data, never waits for it).
    sink, player, turns, frames = _sink(live, ring=9600)
    _feed(sink, _live_audio(_pcm(9000, 1)), [1024], player=player)
    assert player.space() < 1024 and sink.hold()
    player.play(4800)
    assert not sink.hold()
