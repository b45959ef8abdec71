# meerkat_rt.downlink: server frames fed in arbitrary fragments, as the WebSocket delivers them.
import binascii
import json

from meerkat_rt import downlink


class FakePlayer:
    """Collects base64 text per chunk; decodes on commit (the real Player decodes as it goes)."""

    def __init__(self):
        self.pending = None
        self.committed = []  # (item_id, content_index, pcm bytes)
        self.aborted = 0

    def begin_chunk(self):
        assert self.pending is None, "begin_chunk twice without commit/abort"
        self.pending = bytearray()

    def feed_b64(self, buf, off, n):
        assert self.pending is not None
        part = bytes(buf[off : off + n])
        ok = all(c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=" for c in part)
        self.pending += part
        return ok

    def commit_chunk(self, item_id, content_index):
        pcm = binascii.a2b_base64(bytes(self.pending))
        self.committed.append((item_id, content_index, pcm))
        self.pending = None
        return len(pcm) // 48

    def abort_chunk(self):
        if self.pending is not None:
            self.aborted += 1
        self.pending = None


class FakeChannel:
    def __init__(self, accept=True):
        self.frames = []
        self.audio = []
        self.accept = accept

    def on_frame(self, frame):
        self.frames.append(frame)

    def on_audio(self, item_id, content_index):
        return self.accept

    def audio_done(self, item_id, ms):
        self.audio.append((item_id, ms))


def _audio_msg(pcm, item_id="item_1", order="natural", spaced=False, inner_ids=False):
    data = binascii.b2a_base64(pcm, newline=False).decode()
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


def _pcm(n, seed):
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def _feed(sink, msg, sizes, is_text=True):
    buf = bytearray(len(msg) + 7)
    buf[3 : 3 + len(msg)] = msg
    off = 3
    i = 0
    end = 3 + len(msg)
    while off < end:
        n = min(sizes[i % len(sizes)], end - off)
        sink.feed(buf, off, n, off == 3, off + n == end, is_text)
        off += n
        i += 1


def _sink(accept=True, capacity=1024):
    player = FakePlayer()
    channel = FakeChannel(accept)
    return downlink.Downlink(player, channel, capacity), player, channel


def test_audio_streams_through_in_any_fragmentation():
    for sizes in ([100000], [1], [3], [7, 1, 13], [64], [501]):
        for order in ("natural", "data_first"):
            for spaced in (False, True):
                sink, player, channel = _sink()
                pcm = _pcm(2400, len(sizes))  # 50 ms: 3200 base64 characters, three times the buffer
                _feed(sink, _audio_msg(pcm, order=order, spaced=spaced), sizes)
                assert player.committed == [("item_1", 0, pcm)], (sizes, order, spaced)
                assert channel.audio == [("item_1", 50)] and channel.frames == []
                assert sink.dropped == 0


def test_ids_inside_the_chunk_and_no_ids():
    sink, player, channel = _sink()
    _feed(sink, _audio_msg(_pcm(960, 1), "item_9", inner_ids=True), [50])
    assert player.committed[0][:2] == ("item_9", 0)
    plain = b'{"type":"channel.event","event":{"type":"output_audio_chunk","chunk":{"mime_type":"audio/pcm","sample_rate_hz":24000,"channels":1,"data":"AAAA"}}}'
    _feed(sink, plain, [40])
    assert player.committed[1] == (None, 0, b"\x00\x00\x00")


def test_skeleton_cache_skips_parsing_for_same_item():
    sink, player, channel = _sink()
    parsed = []
    original = downlink.Downlink._parse

    def counting_parse(self, buf, n):
        parsed.append(n)
        return original(self, buf, n)

    sink._parse = lambda buf, n: counting_parse(sink, buf, n)
    for i in range(5):
        _feed(sink, _audio_msg(_pcm(1920, i)), [256])
    _feed(sink, _audio_msg(_pcm(1920, 9), "item_2"), [256])
    assert len(parsed) == 2, parsed  # one parse per distinct skeleton
    assert [c[0] for c in player.committed] == ["item_1"] * 5 + ["item_2"]


def test_other_frames_are_parsed_and_dispatched():
    sink, player, channel = _sink()
    frames = [
        {"type": "channel.event", "event": {"type": "output_text_delta", "delta": "Hi " * 50}},
        {"type": "channel.status", "status": {"state": "ready", "attempt_count": 0}},
        {"type": "channel.error", "code": "audio_format_mismatch", "message": "m"},
        {"type": "channel.closed", "reason": "client_closed"},
    ]
    for f in frames:
        _feed(sink, json.dumps(f).encode(), [33])
    assert channel.frames == frames
    assert sink.frames == 4 and sink.dropped == 0


def test_bad_input_is_dropped_counted_and_survived():
    sink, player, channel = _sink(capacity=512)
    _feed(sink, b"not json at all", [5])
    _feed(sink, json.dumps({"type": "channel.event", "event": {"type": "output_text_delta", "delta": "x" * 2000}}).encode(), [100])
    _feed(sink, b"\x00\x01binary", [3], is_text=False)
    bad_b64 = _audio_msg(_pcm(300, 3)).replace(b'"data":"', b'"data":"!!!!', 1)
    _feed(sink, bad_b64, [64])
    wrong_rate = _audio_msg(_pcm(300, 4)).replace(b"24000", b"16000")
    _feed(sink, wrong_rate, [64])
    assert sink.dropped == 5, sink.dropped
    assert player.committed == [] and player.pending is None
    # ...and the next good frame still gets through
    _feed(sink, _audio_msg(_pcm(96, 5)), [64])
    _feed(sink, b'{"type":"channel.event","event":{"type":"turn_completed"}}', [64])
    assert len(player.committed) == 1 and channel.frames[-1]["event"]["type"] == "turn_completed"


def test_unknown_events_are_counted_not_dropped():
    sink, player, channel = _sink()
    _feed(sink, b'{"type":"channel.event","event":{"type":"future_thing","x":1}}', [10])
    assert sink.unknown == 1 and sink.dropped == 0 and channel.frames[0]["event"]["type"] == "future_thing"


def test_rejected_audio_is_aborted():
    sink, player, channel = _sink(accept=False)
    _feed(sink, _audio_msg(_pcm(480, 6)), [128])
    assert player.committed == [] and player.aborted == 1 and channel.audio == []
