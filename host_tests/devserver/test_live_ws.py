"""/live/ws conformance (meerkat-live.md 3; checklist section 11): the HTTP phase, token
admission after the upgrade, `ready` first, and the inbound frame rules of 3.4."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import websocket

from meerkat_tools.devserver import Faults
from meerkat_tools.devserver import live_wire

from ._client import silence, tone
from ._live_client import (
    Ended,
    LiveSocket,
    connect,
    error,
    live_open,
    of,
    parse_frames,
    raw_upgrade,
    read_all,
    result,
)


def hostport(srv) -> tuple[str, int]:
    host, port = srv.live_ws_url[len("ws://"):].split("/")[0].rsplit(":", 1)
    return host, int(port)


def refused(sock: LiveSocket, reason: str) -> None:
    """One {"error":"invalid_token","reason"} frame, then Close 1008 invalid_token."""
    assert sock.recv() == {"error": "invalid_token", "reason": reason}
    with pytest.raises(Ended) as end:
        sock.recv()
    assert end.value.close_frame == (1008, "invalid_token")


def dropped(sock: LiveSocket) -> list[dict]:
    """The socket ends with neither a frame of explanation nor a Close frame."""
    close, frames = sock.expect_end()
    assert close is None, close
    return frames


# -- HTTP phase ---------------------------------------------------------------------------------


def test_other_paths_are_404(live):
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(live.live_ws_url.replace("/live/ws", "/realtime/ws") + "?token=x&channel=y", timeout=5)
    assert err.value.status_code == 404


@pytest.mark.parametrize("path, missing", [("/live/ws?channel=c", "token"), ("/live/ws?token=t", "channel"),
                                           ("/live/ws", "token")])
def test_missing_query_parameters_are_400(live, path, missing):
    sock, head, rest = raw_upgrade(*hostport(live), path)
    body = rest + read_all(sock)
    assert head.startswith(b"HTTP/1.1 400 ")
    assert f"missing field `{missing}`".encode() in head + body
    sock.close()


def test_every_well_formed_upgrade_gets_101_before_the_token_is_looked_at(live):
    sock, head, rest = raw_upgrade(*hostport(live), "/live/ws?token=nonsense&channel=nonsense")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-protocol" not in head.lower()
    frames = parse_frames(rest + read_all(sock))  # never replying to the Close
    assert frames[0] == (1, b'{"error":"invalid_token","reason":"channel not bound"}')
    assert frames[1][0] == 8 and frames[1][1][:2] == (1008).to_bytes(2, "big") and frames[1][1][2:] == b"invalid_token"
    assert len(frames) == 2  # and the server ended the connection without waiting for our Close
    sock.close()


def test_connection_admission_is_limited(live, monkeypatch):
    monkeypatch.setattr(live_wire, "MAX_LIVE_WS_CONNECTIONS", 1)
    first, opened = connect(live)
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(opened["transport"]["url"], timeout=5)
    assert err.value.status_code == 503
    first.send_text("still fine")
    first.recv_obs("turn_completed")


# -- admission ----------------------------------------------------------------------------------


def test_a_good_token_gets_ready_first_and_no_greeting(live):
    opened = live_open(live)
    sock = LiveSocket(opened["transport"]["url"])
    assert sock.raw == []
    assert sock.recv() == {"observation": "ready"}
    assert sock.raw[0] == '{"observation":"ready"}'


def test_token_reasons(live):
    opened = live_open(live)
    url, token, cid = opened["transport"]["url"], opened["transport"]["token"], opened["channel_id"]
    base = live.live_ws_url
    refused(LiveSocket(f"{base}?token={uuid.uuid4()}&channel={cid}"), "token not found")
    refused(LiveSocket(f"{base}?token={token}&channel={uuid.uuid4()}"), "token bound to a different channel")
    # The wrong-channel presentation consumed it.
    refused(LiveSocket(url), "token already consumed")
    # A rejected token leaves the channel open (and its session bound).
    assert result(live, "live/status", {"channel_id": cid})["status"] == {"status": "opening"}
    assert "already has an active live channel" in error(live, "live/open", {"session_id": live.session_id})["message"]
    result(live, "live/close", {"channel_id": cid})
    refused(LiveSocket(url), "token already consumed")


def test_expired_token_is_consumed(make_server):
    srv = make_server(surface="live", token_ttl=0.05)
    opened = live_open(srv)
    time.sleep(0.1)  # let the 50 ms TTL pass
    refused(LiveSocket(opened["transport"]["url"]), "token expired")
    refused(LiveSocket(opened["transport"]["url"]), "token already consumed")


def test_good_token_for_a_closed_channel(live):
    opened = live_open(live)
    result(live, "live/close", {"channel_id": opened["channel_id"]})
    refused(LiveSocket(opened["transport"]["url"]), "channel not bound")


@pytest.mark.parametrize("fault, reason", [("expire", "token expired"), ("consume", "token already consumed")])
def test_token_fault(make_server, fault, reason):
    srv = make_server(surface="live", faults=Faults(token_fault=fault))
    refused(LiveSocket(live_open(srv)["transport"]["url"]), reason)
    result(srv, "live/close", {"channel_id": srv.channels()[-1]["id"]})
    sock, _ = connect(srv)  # fired once
    sock.send_text("ok")
    sock.recv_obs("turn_completed")


def test_expire_and_consume_tokens_api(live):
    opened = live_open(live)
    assert live.expire_tokens() == 1
    refused(LiveSocket(opened["transport"]["url"]), "token expired")
    result(live, "live/close", {"channel_id": opened["channel_id"]})
    opened = live_open(live)
    assert live.consume_tokens(opened["channel_id"]) == 1
    refused(LiveSocket(opened["transport"]["url"]), "token already consumed")


# -- inbound frames -----------------------------------------------------------------------------


def test_binary_pcm_with_format_is_audio(live):
    sock, opened = connect(live)
    sock.send_pcm(silence(40))
    sock.send_pcm(b"\x01\x00" * 7)  # any length is taken as it is
    sock.send_text("sync")  # frames are processed in order: the audio came first
    sock.recv_obs("user_transcript_final")
    assert live.input_pcm(opened["channel_id"]) == silence(40) + b"\x01\x00" * 7


def test_binary_without_format_closes_the_channel(live):
    opened = live_open(live)
    url = opened["transport"]["url"].replace("&format=pcm_24k_mono", "")
    sock = LiveSocket(url)
    assert sock.recv() == {"observation": "ready"}
    sock.send_text("text is fine")
    sock.recv_obs("user_transcript_final")
    sock.send_pcm(silence(20))
    dropped(sock)
    live.wait_channel_ended(opened["channel_id"])
    assert result(live, "live/status", {"channel_id": opened["channel_id"]})["status"] == {"status": "closed"}


def test_unknown_format_counts_as_absent(live):
    opened = live_open(live)
    sock = LiveSocket(opened["transport"]["url"].replace("pcm_24k_mono", "pcm_16k_mono"))
    assert sock.recv() == {"observation": "ready"}
    sock.send_pcm(silence(20))
    dropped(sock)


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"kind":"smell","data":"x"}',
        '{"kind":"audio","data":"AAAA","sample_rate_hz":24000}',
        '{"kind":"audio","data":"not base64!","sample_rate_hz":24000,"channels":1}',
        '{"kind":"video_frame","codec":"vp8","data":"@@@","timestamp_ms":1}',
        '{"kind":"text","text":5}',
    ],
)
def test_malformed_text_closes_without_a_frame(live, text):
    sock, opened = connect(live)
    sock.send_json(text)
    assert dropped(sock) == []
    live.wait_channel_ended(opened["channel_id"])


def test_pong_closes_the_channel_and_ping_is_answered(live):
    sock, opened = connect(live)
    sock.ws.ping(b"keepalive?")
    sock.send_text("after the ping")
    sock.recv_obs("turn_completed")
    assert websocket.ABNF.OPCODE_PONG in sock.opcodes
    sock.ws.pong(b"unsolicited")
    assert dropped(sock) == []
    assert "pong" in live.channels()[-1]["end_reason"]


def test_image_on_the_websocket_is_rejected_and_survives(live):
    sock, _ = connect(live)
    sock.send_json({"kind": "image", "idempotency_key": "k1", "mime": "image/png", "data": "iVBORw0KGgo="})
    assert sock.recv() == {
        "observation": "command_rejected",
        "code": {"code": "config_rejected", "reason": {"kind": "image_input_transport_unsupported",
                                                        "transport": "direct_websocket_use_live_send_input_rpc"}},
        "message": "Direct WebSocket image frames are unsupported; send the image with JSON-RPC live/send_input "
                   "and wait for user_content_committed before dependent input",
    }
    sock.send_text("still here")
    sock.recv_obs("turn_completed")


@pytest.mark.parametrize("rate, channels", [(16000, 1), (24000, 2)])
def test_audio_rate_mismatch_is_rejected_asynchronously(live, rate, channels):
    sock, opened = connect(live)
    sock.send_audio_json(tone(100), rate, channels)
    rejected = sock.recv()
    assert rejected == {
        "observation": "command_rejected",
        "code": {"code": "config_rejected", "reason": {
            "kind": "audio_input_format_mismatch", "expected_sample_rate_hz": 24000, "expected_channels": 1,
            "actual_sample_rate_hz": rate, "actual_channels": channels}},
        "message": f"live adapter send_input: audio chunk declared rate={rate}Hz ch={channels} but OpenAI "
                   "Realtime session is fixed at rate=24000Hz ch=1 (PCM mono)",
    }
    assert live.input_pcm(opened["channel_id"]) == b""  # never appended
    sock.send_audio_json(silence(40))
    sock.send_text("fine")
    sock.recv_obs("turn_completed")
    assert live.input_pcm(opened["channel_id"]) == silence(40)


def test_video_frames_are_not_implemented(live):
    sock, _ = connect(live)
    sock.send_json({"kind": "video_frame", "codec": "vp8", "data": "AAAA", "timestamp_ms": 5})
    rejected = sock.recv()
    assert rejected["observation"] == "command_rejected"
    assert rejected["code"]["reason"] == {"kind": "video_frame_input_not_implemented"}


def test_input_before_ready_gets_the_not_ready_frame(make_server):
    srv = make_server(surface="live", faults=Faults(ready_delay=0.5))
    opened = live_open(srv)
    sock = LiveSocket(opened["transport"]["url"])
    sock.send_text("too soon")
    cid = opened["channel_id"]
    assert sock.recv() == {"error": f"channel {cid} is not ready (status: Opening)", "reason": "channel_not_ready"}
    assert sock.recv() == {"observation": "ready"}
    sock.send_text("now")
    sock.recv_obs("turn_completed")


def test_frames_over_2_mib_close_the_channel(live):
    sock, opened = connect(live)
    sock.send_pcm(bytes(2 << 20))  # exactly the limit: accepted
    sock.send_text("sync")
    sock.recv_obs("user_transcript_final")
    try:
        sock.send_pcm(bytes((2 << 20) + 2))
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server drops the socket once the header says too long: maybe before we finish
    close, _ = sock.expect_end()  # observations of the turn may still arrive before the end
    assert close is None
    live.wait_channel_ended(opened["channel_id"])
    assert "read error" in live.channels()[-1]["end_reason"]


def test_backpressure_fault_rejects_inputs_and_survives(make_server):
    srv = make_server(surface="live", faults=Faults(backpressure_inputs=1))
    sock, _ = connect(srv)
    sock.send_pcm(silence(20))
    rejected = sock.recv()
    assert rejected["observation"] == "command_rejected"
    assert rejected["code"]["reason"] == {"kind": "input_backpressured", "max_pending_bytes": 6291456}
    sock.send_text("ok")
    sock.recv_obs("turn_completed")


def test_client_close_ends_the_channel(live):
    sock, opened = connect(live)
    sock.ws.send_close(1000, b"bye")
    live.wait_channel_ended(opened["channel_id"])
    assert result(live, "live/status", {"channel_id": opened["channel_id"]})["status"] == {"status": "closed"}
    again, _ = connect(live)  # no reattach, but a new channel is fine
    again.send_text("new channel")
    assert of(again.recv_until(lambda f: f.get("observation") == "turn_completed"), "turn_completed")
    json.dumps(again.raw)
