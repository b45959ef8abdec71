"""Fault injection: dropped sockets, injected frames, paused reads."""

from __future__ import annotations

import json
import socket
import time

import pytest
import websocket

from meerkat_tools.devserver import Faults

from ._client import Channel, Closed, connect, silence


def ended_abruptly(ch: Channel, timeout: float = 5.0) -> None:
    """The socket ends with no Close frame and no channel.closed."""
    ch.ws.settimeout(timeout)
    with pytest.raises((Closed, ConnectionError)) as end:
        while True:
            frame = ch.recv(timeout)
            assert frame.get("type") != "channel.closed", frame
    if isinstance(end.value, Closed):
        assert end.value.close_frame is None


def test_drop_after_frames_resets_once(make_server):
    srv = make_server(faults=Faults(drop_after_frames=3))
    ch, _ = connect(srv)  # channel.open is frame 1
    ch.send_audio(silence(40))
    ch.send_audio(silence(40))  # frame 3: processed, then the socket is reset
    ended_abruptly(ch)
    srv.wait_channel_ended(1)
    assert len(srv.frames(1)) == 3
    assert srv.input_pcm() == silence(80)
    assert srv.faults.drop_after_frames is None  # fired once
    ch2, _ = connect(srv)
    for _ in range(5):
        ch2.send_audio(silence(40))
    assert ch2.sentinel() == []


def test_drop_after_frames_repeats_when_asked(make_server):
    srv = make_server(faults=Faults(drop_after_frames=1, repeat=True))
    for n in (1, 2):
        ch, opened = connect(srv)  # opened is sent, then the drop
        ended_abruptly(ch)
        srv.wait_channel_ended(n)


def test_drop_at_time_with_fin(make_server):
    srv = make_server(faults=Faults(drop_at=0.1, drop_mode="close"))
    ch, _ = connect(srv)
    started = time.monotonic()
    assert ch.expect_end() is None  # TCP FIN, no close frame, no channel.closed
    assert time.monotonic() - started >= 0.05
    assert not any('"channel.closed"' in r for r in ch.raw)


def test_drop_now_via_api(srv):
    ch, _ = connect(srv)
    srv.drop("reset")
    ended_abruptly(ch)
    srv.wait_channel_ended(1)


def test_silent_drop_keeps_the_target_busy_until_the_socket_dies(make_server):
    srv = make_server(faults=Faults(silent_hold=1.0))
    ch, _ = connect(srv)
    srv.drop("silent")
    info = srv.open_info()
    probe = Channel(info["ws_url"])
    probe.send({"type": "channel.open", "protocol_version": "2", "open_token": info["open_token"],
                "role": "primary", "turning_mode": "provider_managed"})
    assert probe.recv()["code"] == "target_busy"  # the real server has no idle timeout either
    ch.send_text("hello?")
    with pytest.raises(websocket.WebSocketTimeoutException):
        ch.recv(0.3)  # nothing comes back on a dead link
    srv.wait_channel_ended(1, timeout=5)
    _, opened = connect(srv)
    assert opened["type"] == "channel.opened"


def test_inject_malformed_unknown_and_binary(srv):
    ch, _ = connect(srv)
    srv.inject("malformed")
    ch.ws.settimeout(5)
    opcode, data = ch.ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_TEXT
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)
    srv.inject("unknown_event")
    assert ch.recv() == {"type": "channel.event", "event": {"type": "devserver_unknown_event", "note": "ignore me"}}
    srv.inject("unknown_frame")
    assert ch.recv()["type"] == "channel.devserver_unknown"
    srv.inject("binary")
    opcode, data = ch.ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_BINARY and data
    # The channel still works after all that.
    ch.send_text("fine?")
    ch.recv_event("turn_completed")
    kinds = [e["frame"]["inject"] for e in srv.sent_frames() if e["kind"] == "inject"]
    assert kinds == ["malformed", "unknown_event", "unknown_frame", "binary"]


def test_inject_oversized(srv):
    ch, _ = connect(srv)
    srv.inject("oversized", size=300_000)
    ch.ws.settimeout(5)
    opcode, data = ch.ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_TEXT and len(data) == 300_000
    assert json.loads(data)["event"]["type"] == "devserver_padding"


def test_inject_bad_ws_frame(srv):
    ch, _ = connect(srv)
    srv.inject("bad_ws_frame")
    ch.ws.settimeout(5)
    with pytest.raises(websocket.WebSocketProtocolException):
        ch.ws.recv_data()


def test_timed_injections(make_server):
    srv = make_server(faults=Faults(inject_at=[(0.02, "unknown_event"), (0.05, "unknown_frame")]))
    ch, _ = connect(srv)
    assert ch.recv()["event"]["type"] == "devserver_unknown_event"
    assert ch.recv()["type"] == "channel.devserver_unknown"


def test_pause_reading_applies_backpressure(make_server):
    srv = make_server(ws_recv_buffer=4096)
    ch, _ = connect(srv)
    before = len(srv.frames())
    srv.pause_reading(0.8)
    ch.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ch.ws.settimeout(0.2)
    sent = 0
    blocked = False
    chunk = silence(20)
    started = time.monotonic()
    while time.monotonic() - started < 0.6:
        try:
            ch.send_audio(chunk)
            sent += 1
        except websocket.WebSocketTimeoutException:
            blocked = True  # the client's send blocked: TCP backpressure reached it
            break
    assert blocked, f"sent {sent} frames without blocking"
    assert sent >= 1
    print("frames sent before the client blocked:", sent)
    assert len(srv.frames()) == before  # nothing was read while paused
    # After the pause everything that was fully sent arrives.
    srv.wait_for(lambda: len(srv.frames()) >= before + sent, timeout=5)


def test_timed_pause_reading(make_server):
    srv = make_server(faults=Faults(pause_reading_at=0.1, pause_reading_for=0.3))
    ch, _ = connect(srv)
    for _ in range(30):  # a frame every 20 ms for 0.6 s, across the pause
        ch.send_audio(silence(20))
        time.sleep(0.02)
    srv.wait_for(lambda: len(srv.frames()) >= 31, timeout=5)
    stamps = [e["t"] for e in srv.frames()]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert max(gaps) >= 0.25  # nothing was read while the server was not reading
    assert srv.faults.pause_reading_at is None


def test_silent_drop_after_frames(make_server):
    srv = make_server(faults=Faults(drop_after_frames=2, drop_mode="silent", silent_hold=0.3))
    ch, _ = connect(srv)
    ch.send_text("this one is heard, then the link dies")
    with pytest.raises(websocket.WebSocketTimeoutException):
        while True:
            frame = ch.recv(0.15)
            assert frame.get("type") != "channel.closed"
    srv.wait_channel_ended(1, timeout=5)
    assert srv.channels()[0]["end_reason"] == "dropped (silent)"


def test_message_size_limit_ends_the_connection(make_server):
    srv = make_server(ws_max_message=4096, ws_max_frame=4096)
    ch, _ = connect(srv)
    ch.send_audio(silence(20))  # 1.3 KB: fine
    assert ch.sentinel() == []
    ch.send_audio(silence(100))  # 6.4 KB of base64: over the limit
    with pytest.raises((Closed, ConnectionError)):
        while True:
            frame = ch.recv(5)
            assert frame.get("type") != "channel.closed"
    srv.wait_channel_ended(1)
    assert srv.input_pcm() == silence(20)
