"""In-session rules (reference 5.1-5.9), closing, and observers (6.3)."""

from __future__ import annotations

import base64

import pytest

from ._client import AUDIO_FORMAT, Closed, connect, event_types, is_event, silence, summary, tone


def error_of(frames: list[dict]) -> list[dict]:
    return [f for f in frames if f.get("type") == "channel.error"]


@pytest.mark.parametrize(
    "text",
    [
        "{broken",
        '{"type":"channel.nope"}',
        '{"type":"channel.input","chunk":{"kind":"audio_chunk","mime_type":"audio/pcm","channels":1,"data":""}}',
        '{"type":"channel.input","chunk":{"kind":"audio_chunk","mime_type":"audio/pcm","sample_rate_hz":24000,"channels":256,"data":""}}',
        '{"type":"channel.input","chunk":{"kind":"sound_chunk"}}',
        '{"type":"channel.barge_in_truncate","item_id":"item_1","content_index":0,"audio_played_ms":-5}',
        '{"type":"channel.barge_in_truncate","item_id":"item_1","audio_played_ms":5}',
    ],
)
def test_mid_session_invalid_frame_does_not_close(srv, text):
    ch, _ = connect(srv)
    ch.send(text)
    error = ch.recv()
    assert error["type"] == "channel.error" and error["code"] == "invalid_frame"
    assert error["message"].startswith("failed to parse realtime frame: ")
    # The channel survives: a text turn still gets its reply.
    ch.send_text("still there?")
    ch.recv_event("turn_completed")


def test_unexpected_channel_open(srv):
    ch, _ = connect(srv)
    info = srv.open_info()
    ch.send({"type": "channel.open", "protocol_version": "2", "open_token": info["open_token"],
             "role": "primary", "turning_mode": "provider_managed"})
    assert ch.recv() == {
        "type": "channel.error",
        "code": "unexpected_channel_open",
        "message": "channel.open is only valid as the first realtime websocket frame",
    }
    assert ch.sentinel() == []
    ch.send_text("hello")
    ch.recv_event("turn_completed")


def test_commit_turn_unavailable_in_provider_managed(srv):
    ch, _ = connect(srv)
    ch.send({"type": "channel.commit_turn"})
    assert ch.recv() == {
        "type": "channel.error",
        "code": "commit_turn_unavailable",
        "message": "channel.commit_turn is only valid for explicit_commit channels",
    }
    ch.send_text("hello")
    ch.recv_event("turn_completed")


@pytest.mark.parametrize(
    "fmt",
    [
        {"mime_type": "audio/pcm", "sample_rate_hz": 16000, "channels": 1},
        {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 2},
        {"mime_type": "audio/pcm;rate=24000", "sample_rate_hz": 24000, "channels": 1},
        {"mime_type": "audio/L16", "sample_rate_hz": 24000, "channels": 1},
    ],
)
def test_audio_format_mismatch_drops_the_chunk(srv, fmt):
    ch, _ = connect(srv)
    ch.send_audio(tone(100), fmt)
    error = ch.recv()
    assert error["type"] == "channel.error" and error["code"] == "audio_format_mismatch"
    assert error["message"] == (
        "audio input format does not match provider negotiated format: expected audio/pcm @ 24000 Hz / 1 ch, "
        f"got {fmt['mime_type']} @ {fmt['sample_rate_hz']} Hz / {fmt['channels']} ch"
    )
    assert error["details"] == {"kind": "audio_format_mismatch", "expected": AUDIO_FORMAT, "actual": fmt}
    assert list(error) == ["type", "code", "message", "details"]
    ch.send_audio(silence(40))
    assert ch.sentinel() == []  # the good chunk is accepted silently
    assert srv.input_pcm() == silence(40)  # the bad chunk never reached the provider


def test_binary_ping_pong_ignored_after_open(srv):
    ch, _ = connect(srv)
    ch.ws.send_binary(b"\x00\x01")
    ch.ws.pong(b"p")
    ch.ws.ping(b"are you there")
    # The ping is answered by the transport (a pong frame our reader skips), nothing else.
    assert ch.sentinel() == []
    assert [e["kind"] for e in srv.frames()][-4:] == ["binary", "pong", "ping", "text"]


def test_video_input_is_invalid_request_and_survives(srv):
    ch, _ = connect(srv)
    ch.send({"type": "channel.input", "chunk": {"kind": "video_chunk", "mime_type": "image/jpeg", "data": "AAAA"}})
    error = ch.recv()
    assert error["code"] == "invalid_request"
    assert "video input is not supported" in error["message"]
    ch.send_text("hi")
    ch.recv_event("turn_completed")


def test_invalid_base64_audio_is_fatal_like_openai(srv):
    ch, _ = connect(srv)
    ch.send({"type": "channel.input", "chunk": {"kind": "audio_chunk", **AUDIO_FORMAT, "data": "not base64!"}})
    error = ch.recv()
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("realtime event_pump failed: ")
    assert ch.recv() == {"type": "channel.closed", "reason": "invalid_request"}
    assert ch.expect_end() is None


def test_channel_close_answers_and_drops_without_close_frame(srv):
    ch, _ = connect(srv)
    ch.send({"type": "channel.close"})
    assert ch.recv() == {"type": "channel.closed", "reason": "client_closed"}
    assert ch.expect_end() is None  # TCP ended, no WebSocket Close frame
    srv.wait_channel_ended(1)
    assert srv.status() == {"state": "closed", "attempt_count": 0, "reason": "no realtime channel is open for this target"}
    _, opened = connect(srv)  # the primary slot is free again
    assert opened["status"]["state"] == "ready"


def test_client_close_frame_is_a_silent_teardown(srv):
    ch, _ = connect(srv)
    ch.send_text("hi")
    ch.recv_event("turn_completed")
    ch.ws.send_close(1000, b"")
    with pytest.raises(Closed) as end:
        while True:
            ch.recv()
    assert end.value.close_frame == (1000, "")  # only the close echo
    assert not any(f.get("type") == "channel.closed" for f in map(__import__("json").loads, ch.raw))
    srv.wait_channel_ended(1)
    _, opened = connect(srv)
    assert opened["type"] == "channel.opened"


def test_disconnect_without_close_releases_the_primary(srv):
    ch, _ = connect(srv)
    ch.ws.sock.close()
    srv.wait_channel_ended(1)
    _, opened = connect(srv)
    assert opened["type"] == "channel.opened"


# -- observers -------------------------------------------------------------------------------


def test_observer_is_read_only_but_may_close(srv):
    obs, _ = connect(srv, "observer")
    frames = [
        {"type": "channel.input", "chunk": {"kind": "text_chunk", "text": "x"}},
        {"type": "channel.input", "chunk": {"kind": "audio_chunk", **AUDIO_FORMAT, "data": ""}},
        {"type": "channel.commit_turn"},
        {"type": "channel.interrupt"},
        {"type": "channel.barge_in_truncate", "item_id": "item_1", "content_index": 0, "audio_played_ms": 1},
    ]
    for frame in frames:
        obs.send(frame)
        assert obs.recv() == {
            "type": "channel.error",
            "code": "observer_read_only",
            "message": "observer channels may not send input or control frames",
        }
    obs.send({"type": "channel.open", "protocol_version": "2", "open_token": "x", "role": "observer",
              "turning_mode": "provider_managed"})
    assert obs.recv()["code"] == "unexpected_channel_open"
    obs.send({"type": "channel.close"})
    assert obs.recv() == {"type": "channel.closed", "reason": "client_closed"}
    assert obs.expect_end() is None


def test_observers_get_primary_events_and_status_but_not_errors(srv):
    obs1, _ = connect(srv, "observer")
    obs2, _ = connect(srv, "observer", "explicit_commit")
    primary, _ = connect(srv)
    # Each observer sees the target become ready (its own status poll: opening, then ready).
    for obs in (obs1, obs2):
        frames = obs.recv_until(lambda f: f.get("type") == "channel.status" and f["status"]["state"] == "ready")
        assert frames[-1]["status"] == {"state": "ready", "attempt_count": 0}
    primary.send({"type": "channel.commit_turn"})  # an error for the primary only
    assert primary.recv()["code"] == "commit_turn_unavailable"
    primary.send_text("tell me")
    _, got = primary.recv_event("turn_completed")
    for obs in (obs1, obs2):
        _, seen = obs.recv_event("turn_completed")
        primary_events = [f["event"] for f in got if is_event(f)]
        observer_events = [f["event"] for f in seen if is_event(f) and f["event"]["type"] != "status_changed"]
        assert observer_events == primary_events
        assert not any(f.get("type") in ("channel.error", "channel.opened", "channel.closed") for f in seen)
    primary.send({"type": "channel.close"})
    assert primary.recv()["reason"] == "client_closed"
    # Observers see the target close (their own poll), not the primary's channel.closed.
    frames = obs1.recv_until(lambda f: f.get("type") == "channel.status" and f["status"]["state"] == "closed")
    assert not any(f.get("type") == "channel.closed" for f in frames)


def test_observers_see_duplicate_status_frames(srv):
    obs, _ = connect(srv, "observer")
    primary, _ = connect(srv)
    srv.force_reconnect_cycle(succeed=True)
    primary.recv_until(lambda f: f.get("type") == "channel.status" and f["status"]["state"] == "ready"
                       and len(primary.raw) > 1)
    frames = obs.recv_until(lambda f: is_event(f, "needs_reattach"))
    statuses = [f["status"]["state"] for f in frames if f.get("type") == "channel.status"]
    # Its own poll and the primary's copy: every change may arrive twice.
    assert statuses.count("reconnecting") >= 2


def test_second_primary_is_busy_but_observers_are_unlimited(srv):
    primary, _ = connect(srv)  # keep a reference: a collected socket would close the channel
    observers = []
    for _ in range(3):
        obs, opened = connect(srv, "observer")
        observers.append(obs)
        assert opened["status"]["state"] == "ready"
    ch2_info = srv.open_info()
    from ._client import Channel, open_frame

    ch2 = Channel(ch2_info["ws_url"])
    ch2.send(open_frame(ch2_info["open_token"]))
    assert ch2.recv()["code"] == "target_busy"


def test_events_of_a_text_turn(srv):
    ch, _ = connect(srv)
    ch.send_text("what is the weather")
    _, frames = ch.recv_event("turn_completed")
    types = event_types(frames)
    assert types[:4] == ["turn_started", "input_transcript_partial", "input_transcript_final", "turn_committed"]
    assert frames[1]["event"] == {"type": "input_transcript_partial", "text": "what is the weather"}
    assert frames[2]["event"] == {"type": "input_transcript_final", "text": "what is the weather"}
    assert set(types[4:-1]) == {"output_text_delta", "output_audio_chunk"}
    assert summary(frames)[-1] == "turn_completed"
    assert not error_of(frames)
    data = b"".join(base64.b64decode(e["chunk"]["data"]) for e in map(lambda f: f["event"], frames)
                    if e["type"] == "output_audio_chunk")
    assert len(data) == srv.items()[0]["sent_bytes"]
