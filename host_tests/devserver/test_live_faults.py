"""Live lifecycle and faults (meerkat-live.md 3.9, 7; checklist section 11 "useful fault
switches"): what ends a socket, terminal errors (0.7.0+ silent drop, 0.6.5 published), the
provider's clean end, and the transport faults shared with v2."""

from __future__ import annotations

import base64
import json
import time

import pytest
import websocket

from meerkat_tools.devserver import Faults

from ._client import silence
from ._live_client import Ended, LiveSocket, connect, live_open, of, result


def test_terminal_provider_error_is_a_silent_drop(live):
    sock, opened = connect(live)
    live.force_provider_error()
    close, frames = sock.expect_end()
    assert close is None and not of(frames, "error")
    live.wait_channel_ended(opened["channel_id"])
    assert result(live, "live/status", {"channel_id": opened["channel_id"]})["status"] == {"status": "closed"}


def test_terminal_errors_published_like_0_6_5(make_server):
    srv = make_server(surface="live", live_terminal="publish")
    sock, opened = connect(srv)
    sock.send_text("q")
    sock.recv_obs("turn_completed")
    result(srv, "live/truncate", {"channel_id": opened["channel_id"], "item_id": "item_nope", "content_index": 0,
                                  "audio_played_ms": 5})
    error, _ = sock.recv_obs("error")
    assert error["code"] == {"code": "provider_error"}
    assert error["message"].startswith("provider error: Audio content of 0ms is already shorter than 5ms")
    with pytest.raises(Ended) as end:
        sock.recv()
    assert end.value.close_frame == (1008, "terminal:provider_error")


def test_provider_clean_end_announces_closed_then_drops(live):
    sock, opened = connect(live)
    live.force_provider_close()
    close, frames = sock.expect_end()
    assert close is None
    assert frames == [{"observation": "status_changed", "status": {"status": "closed"}}]
    live.wait_channel_ended(opened["channel_id"])


def test_timed_provider_faults(make_server):
    srv = make_server(surface="live", faults=Faults(provider_close_at=0.05))
    sock, _ = connect(srv)
    close, frames = sock.expect_end()
    assert frames[-1] == {"observation": "status_changed", "status": {"status": "closed"}}
    srv.faults.provider_error_at = 0.05
    sock, _ = connect(srv)
    close, frames = sock.expect_end()
    assert close is None and frames == []


def test_live_close_drops_the_socket_without_a_frame(live):
    sock, opened = connect(live)
    result(live, "live/close", {"channel_id": opened["channel_id"]})
    close, frames = sock.expect_end()
    assert close is None and frames == []


def test_no_reattach_a_drop_ends_the_channel_and_a_new_open_continues(live):
    sock, opened = connect(live)
    sock.send_text("first")
    sock.recv_obs("turn_completed")
    live.drop("reset")
    with pytest.raises((Ended, ConnectionError)):
        while True:
            sock.recv()
    live.wait_channel_ended(opened["channel_id"])
    assert live.live_status(opened["channel_id"]) == "closed"
    again, reopened = connect(live)
    assert reopened["continuity"] == {"mode": "transcript_only"}
    again.send_text("second")
    again.recv_obs("turn_completed")


def test_drop_after_frames_and_drop_at(make_server):
    srv = make_server(surface="live", faults=Faults(drop_after_frames=2))
    sock, opened = connect(srv)
    sock.send_pcm(silence(20))
    sock.send_pcm(silence(20))  # the 2nd frame is processed, then the socket is reset
    with pytest.raises((Ended, ConnectionError)):
        while True:
            sock.recv()
    srv.wait_channel_ended(opened["channel_id"])
    assert srv.input_pcm(opened["channel_id"]) == silence(40)
    srv.faults.drop_at = 0.05
    srv.faults.drop_mode = "close"
    sock, opened = connect(srv)
    close, _ = sock.expect_end()
    assert close is None
    srv.wait_channel_ended(opened["channel_id"])


def test_pause_reading(live):
    sock, opened = connect(live)
    before = len(live.frames(opened["channel_id"]))
    paused_at = time.monotonic()
    live.pause_reading(0.5)
    sock.send_pcm(silence(20))
    sock.send_text("after the pause")
    sock.recv_obs("turn_completed")  # read once the pause ended
    stamps = [e["t"] for e in live.frames(opened["channel_id"])[before:]]
    assert len(stamps) == 2 and stamps[0] - paused_at >= 0.5  # nothing was read while paused


@pytest.mark.parametrize("kind", ["unknown_event", "unknown_observation", "unknown", "unknown_fields"])
def test_injected_unknown_frames(live, kind):
    sock, _ = connect(live)
    live.inject(kind)
    frame = sock.recv()
    if kind == "unknown":
        assert frame == {"observation": "unknown", "debug": "devserver_injected_variant"}
    elif kind == "unknown_fields":
        assert frame["observation"] == "status_changed" and "devserver_extra" in frame
    else:
        assert frame["observation"] == "devserver_unknown"
    sock.send_text("carry on")
    sock.recv_obs("turn_completed")


def test_injected_malformed_binary_and_oversized(live):
    sock, _ = connect(live)
    live.inject("malformed")
    sock.ws.settimeout(5)
    opcode, data = sock.ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_TEXT
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)
    live.inject("binary")
    opcode, data = sock.ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_BINARY
    live.inject("oversized", size=300_000)
    frame = sock.recv()
    assert len(sock.raw[-1]) == 300_000 and frame["observation"] == "devserver_padding"


def test_injected_oversized_audio_carries_the_current_ids(make_server):
    srv = make_server(surface="live", paced=True)
    sock, _ = connect(srv)
    sock.send_text("talk")
    chunk, _ = sock.recv_obs("assistant_audio_chunk")
    srv.inject("oversized_audio", size=200_000)
    big = sock.recv_until(lambda f: f.get("observation") == "assistant_audio_chunk"
                          and len(f["data"]) > 100_000)[-1]
    assert (big["item_id"], big["response_id"]) == (chunk["item_id"], chunk["response_id"])
    assert 190_000 < len(json.dumps(big)) <= 200_000


def test_unknown_fields_everywhere(make_server):
    srv = make_server(surface="live", faults=Faults(unknown_fields=True))
    opened = live_open(srv)
    sock = LiveSocket(opened["transport"]["url"])
    assert sock.recv() == {"observation": "ready", "devserver_extra": {"ignore": True}}
    sock.send_text("q")
    frames = sock.recv_until(lambda f: f.get("observation") == "turn_completed")
    assert all("devserver_extra" in f for f in frames)


def test_long_chunks_by_profile(make_server):
    srv = make_server(surface="live", chunk_profile="1500-2000")
    sock, _ = connect(srv)
    sock.send_text("long chunks")
    item_id = None
    sizes = []
    while sum(sizes) < 9156 * 48:
        frame = sock.recv()
        if frame.get("observation") == "assistant_audio_chunk":
            item_id = item_id or frame["item_id"]
            sizes.append(len(base64.b64decode(frame["data"])))
    assert all(1500 * 48 <= size <= 2000 * 48 for size in sizes[:-1])
    assert srv.items()[0]["chunk_ms"] == [size // 48 for size in sizes]
    assert max(len(r) for r in sock.raw) > 96_000  # one WebSocket frame per chunk: > 96 KB


def test_the_server_never_pings(live):
    sock, _ = connect(live)
    sock.send_text("a whole turn")
    sock.recv_obs("turn_completed")
    sock.send_text("and another")
    sock.recv_obs("turn_completed")
    assert websocket.ABNF.OPCODE_PING not in sock.opcodes
    assert set(sock.opcodes) == {websocket.ABNF.OPCODE_TEXT}
