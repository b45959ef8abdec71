# The link loop with the protocol v2 backend, driven pass by pass with fake parts (no sockets, no
# asyncio): push-to-talk gating, barge-in and truncate rules, close ordering, the rules that keep
# a real server from closing the channel, bounded counters. Plus the reconnect backoff.
import json

from meerkat_rt import config
from meerkat_rt.link import OPEN, Link, _randint, backoff_ms
from meerkat_rt.ring import FrameRing
from meerkat_rt.v2 import protocol

# The link pulls in the codec, the downlink and the WebSocket client: more than 110K of the
# 64-bit unix port's heap once the config module is loaded too (README, "Memory").
MP_HEAP = "256K"


class FakeWS:
    """Records every frame the link sends, in order, unmasked (payload only)."""

    def __init__(self):
        self.tx = bytearray(2816)
        self.sent = []
        self.open = True
        self.close_reason = ""
        self.sink = None
        self.bytes_out = self.bytes_in = 0
        self._frame = None

    def set_sink(self, sink):
        self.sink = sink

    def fits(self, n):
        return n + 8 <= len(self.tx)

    def can_send(self):
        return self.open and self._frame is None

    def send_nowait(self, data, opcode=1):
        if type(data) is str:
            data = data.encode()
        self.sent.append(json.loads(data))
        return True

    def begin(self, n, opcode=1):
        self._frame = bytearray()

    def put(self, src, off, n):
        self._frame += bytes(src[off : off + n])

    def end_frame(self):
        self.sent.append(json.loads(bytes(self._frame)))
        self._frame = None

    def flush(self):
        return False

    def poll(self, now=None):
        return False

    def kinds(self):
        # "audio" for audio input, "text" for text input, else the frame type
        out = []
        for f in self.sent:
            if f["type"] == "channel.input":
                out.append("audio" if f["chunk"]["kind"] == "audio_chunk" else "text")
            else:
                out.append(f["type"])
        return out


class FakePlayer:
    def __init__(self):
        self.item = None
        self.queue = 0
        self.heard = 0
        self.done = False
        self.stops = 0
        self.underruns = self.chunks = self.dropped = 0

    def space(self):
        return 1 << 20

    def tentative(self):
        return 0

    def queued(self):
        return 0

    def current_item(self):
        return self.item

    def heard_ms(self, item):
        return self.heard

    def finished(self, item):
        return self.done

    def stop_now(self):
        self.stops += 1

    def idle(self):
        return self.done

    def poll(self, now=None):
        return False

    def abort_chunk(self):
        pass

    def level_now(self):
        return 0


class FakeVAD:
    threshold = 0
    speaker = 0


class FakeCapture:
    """Pushes a frame of silence into the ring on every poll; VAD events on demand."""

    def __init__(self, ring):
        self.ring = ring
        self.pcm = bytearray(ring.frame_bytes)
        self.events = []
        self.vad = FakeVAD()
        self.level = 0
        self.t = 0

    def poll(self, now):
        self.t += self.ring.frame_ms
        self.ring.push_pcm(self.pcm, 0, self.t)
        return True

    def take_vad_event(self):
        return self.events.pop(0) if self.events else 0


def _channel(**cfg):
    base = {"server": {"rpc": "127.0.0.1:1", "surface": "v2"}, "target": {"type": "session_target", "session_id": "s"}}
    base.update(cfg)
    c = config.validate(base)
    c["max_message"] = 4096
    ring = FrameRing(8, 1920)
    cap = FakeCapture(ring)
    player = FakePlayer()
    ws = FakeWS()
    events = []
    ch = Link(c, player, cap, ring, ws, None, lambda name, data: events.append((name, data)))
    ch.backend._opened = True
    ch._set_state(OPEN)
    return ch, ws, player, cap, events


def _pump(ch, n=1):
    for _ in range(n):
        ch._pump_once()


def _event(ch, etype, **fields):
    fields["type"] = etype
    ch.backend.on_frame({"type": "channel.event", "event": fields})


def test_push_to_talk_sends_nothing_until_talking_and_commits_after_the_last_frame():
    ch, ws, player, cap, events = _channel(turning_mode="explicit_commit")
    _pump(ch, 10)
    assert ws.sent == []  # 400 ms of microphone, none of it sent
    ch.start_talking()
    _pump(ch, 5)
    ch.stop_talking()
    _pump(ch, 5)
    kinds = ws.kinds()
    assert kinds == ["audio"] * 5 + ["channel.commit_turn"], kinds
    assert ch.ring is not None and ch.ring.held  # the button is up: the mic is closed again
    # Reply, then nothing leaves the microphone until the next press.
    player.done = True
    _event(ch, "turn_committed")
    _event(ch, "turn_completed")
    _pump(ch, 10)
    assert ws.kinds().count("audio") == 5


def test_push_to_talk_too_short_is_not_committed_and_closes_the_mic():
    ch, ws, player, cap, events = _channel(turning_mode="explicit_commit")
    ch.start_talking()
    _pump(ch, 1)
    ch.stop_talking()
    _pump(ch, 6)
    assert "channel.commit_turn" not in ws.kinds()
    assert ws.kinds().count("audio") == 1  # the one 40 ms frame, then the mic closed
    assert [d["code"] for n, d in events if n == "error"] == ["turn_too_short"]


def test_provider_managed_holds_the_mic_during_the_reply():
    ch, ws, player, cap, events = _channel()
    _pump(ch, 3)
    assert ws.kinds() == ["audio"] * 3
    _event(ch, "turn_committed")
    _pump(ch, 5)
    assert ws.kinds().count("audio") == 3  # held
    player.done = True
    _event(ch, "turn_completed")
    _pump(ch, 2)
    assert ("reply_done", {"item_id": None}) in events
    assert ws.kinds().count("audio") > 3  # listening again


def _reply_playing(ch, player, item="item_1"):
    _event(ch, "turn_committed")
    assert ch.turns.on_audio(item, 0, None)
    player.item = item
    player.heard = 1234


def test_barge_in_sends_interrupt_and_truncate_together_before_any_audio():
    ch, ws, player, cap, events = _channel()
    _reply_playing(ch, player)
    before = len(ws.sent)
    cap.events.append(1)  # VAD onset during the reply
    _pump(ch, 1)
    sent = ws.sent[before:]
    assert [f["type"] for f in sent[:2]] == ["channel.interrupt", "channel.barge_in_truncate"]
    assert sent[1] == {"type": "channel.barge_in_truncate", "item_id": "item_1", "content_index": 0, "audio_played_ms": 1234}
    assert player.stops == 1
    assert all(f["type"] == "channel.input" for f in sent[2:])  # then the pre-roll
    # Late audio of the interrupted item is dropped; no second truncate for it, ever.
    assert not ch.turns.on_audio("item_1", 0, None)
    ch.interrupt()
    _pump(ch, 1)
    assert [f["type"] for f in ws.sent].count("channel.barge_in_truncate") == 1


def test_no_truncate_without_an_id_or_for_an_item_of_a_lost_session():
    ch, ws, player, cap, events = _channel()
    _reply_playing(ch, player, None)
    cap.events.append(1)
    _pump(ch, 1)
    assert "channel.barge_in_truncate" not in ws.kinds() and "channel.interrupt" in ws.kinds()
    # An item that arrived before a reconnect is unknown to the new channel's server.
    ch, ws, player, cap, events = _channel()
    _reply_playing(ch, player, "item_7")
    ch.turns.link_lost()
    ch.backend.lost()
    ch.backend._opened = True
    ch.interrupt()
    _pump(ch, 1)
    assert "channel.barge_in_truncate" not in ws.kinds()


def test_no_truncate_for_an_item_that_finished_before_a_tool_call():
    ch, ws, player, cap, events = _channel()
    _reply_playing(ch, player)
    _event(ch, "tool_call_requested", call_id="c1", tool_name="lookup")
    player.done = True  # all of "let me check" has played
    ch.interrupt()
    _pump(ch, 1)
    assert "channel.interrupt" in ws.kinds() and "channel.barge_in_truncate" not in ws.kinds()


def test_close_is_the_last_frame():
    ch, ws, player, cap, events = _channel()
    _pump(ch, 2)
    ch.closing = True
    ch.backend._ctrl.append(protocol.CLOSE_FRAME)
    _pump(ch, 3)
    assert ws.kinds()[-1] == "channel.close" and ws.kinds().count("channel.close") == 1


def test_control_frames_wait_while_the_server_reconnects():
    ch, ws, player, cap, events = _channel()
    ch.backend.on_frame({"type": "channel.status", "status": {"state": "reconnecting", "attempt_count": 1}})
    ch.send_text("hello")
    _pump(ch, 3)
    assert ws.sent == []  # neither the text nor audio: the server would discard them
    ch.backend.on_frame({"type": "channel.status", "status": {"state": "ready", "attempt_count": 0}})
    _pump(ch, 1)
    assert ws.sent[0] == {"type": "channel.input", "chunk": {"kind": "text_chunk", "text": "hello"}}


def test_a_server_stuck_answering_channel_reconnecting_gets_a_new_channel():
    ch, ws, player, cap, events = _channel()
    err = {"type": "channel.error", "code": "channel_reconnecting", "message": "m"}
    for _ in range(24):
        ch.backend.on_frame(err)
    assert ch.backend.close_reason is None
    ch.backend.on_frame(err)
    assert ch.backend.close_reason == "stuck_reconnecting"


def test_a_wrong_input_format_is_fatal_but_not_raised_inside_the_parser():
    ch, ws, player, cap, events = _channel()
    ch.backend._opened = False
    caps = {"interrupt_supported": True, "transcript_supported": True, "tool_lifecycle_events_supported": True,
            "video_supported": False, "audio_input_format": {"mime_type": "audio/pcm", "sample_rate_hz": 16000, "channels": 1}}
    ch.backend.on_frame({"type": "channel.opened", "protocol_version": "2", "status": {"state": "ready"}, "capabilities": caps, "role": "primary"})
    assert "16000 Hz" in ch.backend._fatal


def test_text_too_long_for_one_frame_is_refused_to_the_caller():
    ch, ws, player, cap, events = _channel()
    try:
        ch.send_text("x" * 5000)
    except ValueError as exc:
        assert "too long" in str(exc)
    else:
        raise AssertionError("a 5000-byte text was accepted")
    assert ch.backend._ctrl == []


def test_backoff_is_full_jitter_under_a_growing_cap():
    top = lambda n: n - 1  # the largest draw the random source can give  # noqa: E731
    zero = lambda n: 0  # noqa: E731
    ceilings = [backoff_ms(a, 500, 5000, top) for a in range(1, 8)]
    assert ceilings == [500, 1000, 2000, 4000, 5000, 5000, 5000], ceilings
    assert [backoff_ms(a, 500, 5000, zero) for a in range(1, 8)] == [0] * 7
    assert backoff_ms(40, 500, 5000, top) == 5000  # no overflow for long outages
    assert backoff_ms(1, 500, 300, top) == 300  # the cap wins over the initial delay


def test_backoff_draws_spread_over_the_range():
    draws = [backoff_ms(3, 500, 5000, _randint) for _ in range(400)]
    assert min(draws) >= 0 and max(draws) <= 2000
    assert min(draws) < 400 and max(draws) > 1600  # spread: the jitter is real


def _raw(ch, text):
    # A server frame as the WebSocket hands it to the downlink (one fragment).
    data = bytearray(text.encode() if type(text) is str else text)
    ch.ws.sink.feed(data, 0, len(data), True, True, True)


def test_event_counters_are_bounded():
    ch, ws, player, cap, events = _channel()
    for i in range(100):
        _raw(ch, '{"type":"channel.event","event":{"type":"made_up_%d"}}' % i)
    counts = ch.stats()["events"]
    assert len(counts) <= 25 and counts["other"] >= 76
    assert sum(counts.values()) == 100


def test_an_emoji_escaped_as_a_surrogate_pair_reaches_the_app_as_utf8():
    ch, ws, player, cap, events = _channel()
    _raw(ch, '{"type":"channel.event","event":{"type":"input_transcript_final","text":"hi \\ud83e\\udd9c and \\ud83e alone"}}')
    text = [d["text"] for n, d in events if n == "input_transcript_final"][0]
    assert text.encode() == "hi \U0001f99c and \ufffd alone".encode()


def test_server_text_cannot_forge_a_log_line():
    from meerkat_rt import log

    lines = []
    sink = log.sink
    log.sink = lines.append
    try:
        ch, ws, player, cap, events = _channel()
        _raw(ch, '{"type":"channel.error","code":"invalid_frame","message":"bad\\nE link: the device is on fire"}')
    finally:
        log.sink = sink
    assert len(lines) == 1 and "\\n" in lines[0] and "\n" not in lines[0], lines
    assert [d["message"] for n, d in events if n == "error"] == ["bad\nE link: the device is on fire"]


def test_a_close_the_device_did_not_ask_for_is_not_a_clean_stop():
    from meerkat_rt.link import ChannelError, Retry

    for reason, expect in (("client_closed", Retry), ("reconnect_exhausted", Retry), ("a_reason_from_a_newer_server", Retry), ("authentication_failed", ChannelError)):
        ch, ws, player, cap, events = _channel()
        ch.backend.on_frame({"type": "channel.closed", "reason": reason})
        assert ch.backend.ended()
        try:
            ch.backend.finish()
        except expect:
            continue
        raise AssertionError("%s: not %s" % (reason, expect))
    ch, ws, player, cap, events = _channel()
    ch.backend._asked_close = True  # close() sent channel.close: now client_closed is the answer
    ch.backend.on_frame({"type": "channel.closed", "reason": "client_closed"})
    ch.backend.finish()


def test_a_truncate_that_cannot_fit_is_refused_locally_and_the_channel_lives():
    ch, ws, player, cap, events = _channel()
    assert not ch.backend.truncate("i" * 3000, 0, 100)
    assert ch.stats()["control_dropped"] == 1 and ws.open and ch.backend._ctrl == []
    # An id that long is never kept as truncatable: a barge-in over it sends the interrupt only.
    _reply_playing(ch, player, "j" * 200)
    ch.interrupt()
    _pump(ch, 1)
    assert "channel.interrupt" in ws.kinds() and "channel.barge_in_truncate" not in ws.kinds()


def test_an_audio_format_mismatch_pauses_the_uplink_then_tries_again():
    from meerkat_rt.v2 import backend as B

    now = [1000]
    real = B.ticks_ms
    B.ticks_ms = lambda: now[0]
    try:
        ch, ws, player, cap, events = _channel()
        err = {"type": "channel.error", "code": "audio_format_mismatch", "message": "expected 24000 Hz"}
        ch.backend.on_frame(err)
        ch.backend.on_frame(err)  # another answer to a frame already in flight: no change
        _pump(ch, 3)
        assert ws.kinds() == []
        now[0] += 5001
        _pump(ch, 1)
        assert ws.kinds() == ["audio"]  # tried again after 5 s
        ch.backend.on_frame(err)
        now[0] += 5001
        _pump(ch, 1)
        assert ws.kinds() == ["audio"]  # the second pause is twice as long
        now[0] += 5000
        _pump(ch, 1)
        assert ws.kinds().count("audio") >= 2
        assert [d["code"] for n, d in events if n == "error"] == ["audio_format_mismatch"] * 2
    finally:
        B.ticks_ms = real
