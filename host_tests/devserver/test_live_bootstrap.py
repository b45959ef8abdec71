"""live/* JSON-RPC conformance (meerkat-live.md sections 1.2, 2, 5; checklist section 11):
which surface answers which methods, live/open params, result and errors, the channel verbs'
results and errors, status and retention, mob members."""

from __future__ import annotations

import re
import uuid

import pytest

from meerkat_tools.devserver import Faults

from ._client import RpcClient, rpc_open_info
from ._live_client import LiveSocket, connect, error, live_open, query, result, rpc

CAPS = {"audio_in": True, "audio_out": True, "text_in": True, "text_out": True, "image_in": True,
        "video_in": False, "transcript_supported": True, "barge_in_supported": True,
        "provider_native_resume": False}
UNKNOWN_SESSION = "019e0000-0000-7000-8000-00000000abcd"


def test_live_open_result_shape(live):
    opened = live_open(live)
    assert list(opened) == ["channel_id", "transport", "capabilities", "continuity"]
    channel = uuid.UUID(opened["channel_id"])
    assert channel.version == 4 and str(channel) == opened["channel_id"]
    transport = opened["transport"]
    assert list(transport) == ["transport", "url", "token"]
    assert transport["transport"] == "websocket"
    token = uuid.UUID(transport["token"])
    assert token.version == 4
    host, _ = live.rpc_address
    assert re.fullmatch(rf"ws://{re.escape(host)}:\d+/live/ws\?token=[0-9a-f-]+&channel=[0-9a-f-]+&format=pcm_24k_mono",
                        transport["url"])
    assert transport["url"].startswith(live.live_ws_url + "?")
    assert query(transport["url"]) == {"token": transport["token"], "channel": opened["channel_id"],
                                       "format": "pcm_24k_mono"}
    assert opened["capabilities"] == CAPS and list(opened["capabilities"]) == list(CAPS)
    assert opened["continuity"] == {"mode": "fresh"}


def test_unknown_fields_and_optional_params(live):
    opened = live_open(live, turning_mode="explicit_commit", transport="websocket", seed_max_chars=24000,
                       something_new={"x": 1})
    assert opened["transport"]["transport"] == "websocket"
    assert live.channels()[-1]["turning_mode"] == "explicit_commit"


def test_live_methods_absent_on_a_v2_server_and_v2_absent_on_live(make_server, live):
    v2 = make_server(surface="v2")
    for method in ("live/open", "live/status", "live/truncate", "mob/member_live_open"):
        assert error(v2, method, {}) == {"code": -32601, "message": f"Method not found: {method}"}
    for method in ("realtime/open_info", "realtime/status", "realtime/capabilities"):
        assert error(live, method, {}) == {"code": -32601, "message": f"Method not found: {method}"}


def test_both_surfaces_at_once_is_an_extension(make_server):
    srv = make_server(surface="both")
    info = rpc_open_info(srv)
    assert info["ws_url"].endswith("/realtime/ws")
    opened = live_open(srv)
    assert opened["transport"]["url"].startswith(srv.live_ws_url)
    assert srv.ws_url.split("/realtime")[0] != srv.live_ws_url.split("/live")[0]  # separate listeners


def test_both_surfaces_keep_one_consumer_per_session(make_server):
    from ._client import Channel, open_frame

    srv = make_server(surface="both")
    opened = live_open(srv)
    info = rpc_open_info(srv)
    ch = Channel(info["ws_url"])
    ch.send(open_frame(info["open_token"]))
    assert ch.recv()["code"] == "target_busy"
    result(srv, "live/close", {"channel_id": opened["channel_id"]})
    ch = Channel(rpc_open_info(srv)["ws_url"])
    info = rpc_open_info(srv)
    ch.send(open_frame(info["open_token"]))
    assert ch.recv()["type"] == "channel.opened"
    assert "already has an active live channel" in error(srv, "live/open", {"session_id": srv.session_id})["message"]


@pytest.mark.parametrize(
    "params, message",
    [
        (None, "Missing params"),
        ({}, "Invalid params: missing field `session_id`"),
        ({"session_id": 7}, "Invalid params: invalid type: integer `7`, expected a string"),
        ({"session_id": "x", "turning_mode": "sometimes"}, "Invalid params: unknown variant `sometimes`"),
    ],
)
def test_params_errors_are_answered_with_a_null_id(live, params, message):
    reply = rpc(live, "live/open", params, req_id=41)
    assert reply["id"] is None  # the live handlers build these errors without the request id
    assert reply["error"]["code"] == -32602
    assert reply["error"]["message"].startswith(message)


def test_live_open_errors(live):
    err = error(live, "live/open", {"session_id": "not-a-uuid"})
    assert err["code"] == -32602 and err["message"].startswith("invalid session_id: invalid character")
    assert error(live, "live/open", {"session_id": UNKNOWN_SESSION}) == {
        "code": -32602, "message": f"session {UNKNOWN_SESSION} not found"}
    assert error(live, "live/open", {"session_id": live.session_id, "seed_max_chars": 0}) == {
        "code": -32602, "message": "live seed window must be greater than zero"}
    assert error(live, "live/open", {"session_id": live.session_id, "transport": "webrtc"}) == {
        "code": -32602, "message": "live transport webrtc is not configured"}
    live_open(live)
    assert error(live, "live/open", {"session_id": live.session_id}) == {
        "code": -32602, "message": f"session {live.session_id} already has an active live channel"}


def test_provider_open_failure_and_bootstrap_error(make_server):
    srv = make_server(surface="live", faults=Faults(open_error="authentication_failed"))
    err = error(srv, "live/open", {"session_id": srv.session_id})
    assert err["code"] == -32603 and err["message"].startswith("failed to open provider session: ")
    assert live_open(srv)["channel_id"]  # fired once; no channel was left behind
    srv.faults.bootstrap_error = (-32020, "denied by test")
    assert error(srv, "live/open", {"session_id": srv.session_id}) == {"code": -32020, "message": "denied by test"}


def test_open_delay_is_the_provider_session_opening(make_server):
    srv = make_server(surface="live", faults=Faults(open_delay=0.3))
    client = RpcClient(srv.rpc_address)
    try:
        reply = client.request("live/open", {"session_id": srv.session_id})
    finally:
        client.close()
    call = srv.rpc_calls("live/open")[-1]
    assert call["t_done"] - call["t"] >= 0.3
    assert reply["result"]["channel_id"]


def test_status_opening_ready_closed_and_retention(make_server):
    srv = make_server(surface="live", live_status_retention=0.3)
    opened = live_open(srv)
    cid = opened["channel_id"]
    assert result(srv, "live/status", {"channel_id": cid}) == {"channel_id": cid, "status": {"status": "opening"}}
    sock = LiveSocket(opened["transport"]["url"])
    assert sock.recv() == {"observation": "ready"}
    srv.wait_for(lambda: srv.live_status(cid) == "ready")
    assert result(srv, "live/status", {"channel_id": cid})["status"] == {"status": "ready"}
    sock.ws.sock.close()  # a dropped WebSocket ends the channel
    srv.wait_channel_ended(cid)
    assert result(srv, "live/status", {"channel_id": cid})["status"] == {"status": "closed"}
    for method in ("live/close", "live/interrupt", "live/refresh", "live/commit_input"):
        assert error(srv, method, {"channel_id": cid}) == {"code": -32602, "message": f"channel {cid} not found"}
    srv.wait_for(lambda: "error" in rpc(srv, "live/status", {"channel_id": cid}), timeout=5)
    assert error(srv, "live/status", {"channel_id": cid}) == {"code": -32602, "message": f"channel {cid} not found"}


def test_verbs_answer_queue_acceptance(live):
    sock, opened = connect(live)
    cid = opened["channel_id"]
    assert result(live, "live/refresh", {"channel_id": cid}) == {"status": "queued"}
    assert result(live, "live/interrupt", {"channel_id": cid}) == {"status": "interrupted"}
    assert result(live, "live/interrupt", {"channel_id": cid}) == {"status": "interrupted"}  # idempotent
    assert result(live, "live/send_input", {"channel_id": cid, "chunk": {"kind": "text", "text": "hi"}}) == {
        "status": "sent"}
    sock.recv_obs("turn_completed")
    assert result(live, "live/close", {"channel_id": cid}) == {"status": "closed"}


def test_unknown_channel_and_verb_params(live):
    missing = str(uuid.uuid4())
    for method in ("live/status", "live/close", "live/interrupt", "live/refresh", "live/commit_input"):
        assert error(live, method, {"channel_id": missing}) == {"code": -32602, "message": f"channel {missing} not found"}
    assert error(live, "live/truncate", {"channel_id": missing, "item_id": "", "content_index": 0,
                                         "audio_played_ms": 0}) == {"code": -32602, "message": "item_id must be non-empty"}
    reply = rpc(live, "live/truncate", {"channel_id": missing, "item_id": "x", "content_index": -1, "audio_played_ms": 0})
    assert reply["id"] is None and reply["error"]["message"].startswith("Invalid params: ")
    err = error(live, "live/commit_input", {"channel_id": missing, "response_modality": {"modality": "video"}})
    assert err["code"] == -32602 and err["message"].startswith("invalid response_modality: ")


def test_send_input_errors(live):
    opened = live_open(live)
    cid = opened["channel_id"]
    err = error(live, "live/send_input", {"channel_id": cid, "chunk": {"kind": "text", "text": "too early"}})
    assert err == {"code": -32603, "message": f"channel {cid} is not ready (status: Opening)"}
    err = error(live, "live/send_input", {"channel_id": cid, "chunk": {"kind": "audio", "data": "!!", "sample_rate_hz": 24000,
                                                                   "channels": 1}})
    assert err["code"] == -32602 and err["message"].startswith("invalid base64 in live audio input chunk")
    err = error(live, "live/send_input", {"channel_id": "", "chunk": {"kind": "text", "text": "x"}})
    assert err == {"code": -32602, "message": "live channel identity is empty or too large", "data": {
        "error_code": {"code": "config_rejected", "reason": {"kind": "other", "detail": "live_channel_id_empty"}}}}
    err = error(live, "live/send_input", {"channel_id": "x" * 129, "chunk": {"kind": "text", "text": "x"}})
    assert err["data"]["error_code"]["reason"] == {"kind": "input_too_large", "max_bytes": 128, "actual_bytes": 129}


def test_send_input_over_rpc_reaches_the_turn(live):
    sock, opened = connect(live)
    result(live, "live/send_input", {"channel_id": opened["channel_id"], "chunk": {"kind": "text", "text": "over rpc"}})
    final, _ = sock.recv_obs("user_transcript_final")
    assert final["text"] == "over rpc"
    sock.recv_obs("turn_completed")


def test_image_over_rpc_gets_a_receipt(live):
    sock, opened = connect(live)
    result(live, "live/send_input", {"channel_id": opened["channel_id"], "chunk": {
        "kind": "image", "idempotency_key": "turn-1-photo", "mime": "image/png", "data": "iVBORw0KGgo="}})
    receipt, _ = sock.recv_obs("user_content_committed")
    assert receipt["idempotency_key"] == "turn-1-photo" and receipt["media_type"] == "image/png"
    assert receipt["content_index"] == 0 and receipt["item_id"]


def test_continuity_is_transcript_only_once_history_exists(live):
    sock, opened = connect(live)
    sock.send_text("remember me")
    sock.recv_obs("turn_completed")
    result(live, "live/close", {"channel_id": opened["channel_id"]})
    again = live_open(live)
    assert again["continuity"] == {"mode": "transcript_only"}
    assert again["channel_id"] != opened["channel_id"]


def test_rpc_connection_closing_does_not_end_the_channel(live):
    client = RpcClient(live.rpc_address)
    opened = client.request("live/open", {"session_id": live.session_id})["result"]
    client.close()
    sock = LiveSocket(opened["transport"]["url"])
    assert sock.recv() == {"observation": "ready"}
    assert result(live, "live/status", {"channel_id": opened["channel_id"]})["status"] == {"status": "ready"}


# -- mob members -------------------------------------------------------------------------------


@pytest.fixture
def mob(make_server):
    return make_server(surface="both", mob_member="crew/navigator")


def test_mob_member_live_open_and_control(mob):
    opened = result(mob, "mob/member_live_open", {"mob_id": "crew", "agent_identity": "navigator"})
    assert list(opened) == ["channel_id", "transport", "capabilities", "continuity"]
    cid = opened["channel_id"]
    sock = LiveSocket(opened["transport"]["url"])
    assert sock.recv() == {"observation": "ready"}
    base = {"mob_id": "crew", "agent_identity": "navigator"}
    assert result(mob, "mob/member_live_status", base) == {"channel_id": cid, "status": {"status": "ready"}}
    sock.send_text("hello member")
    sock.recv_obs("assistant_audio_chunk")
    assert result(mob, "mob/member_live_control", dict(base, channel_id=cid, verb={"verb": "interrupt"})) == {
        "status": "interrupted"}
    sock.recv_obs("turn_completed")
    assert result(mob, "mob/member_live_control", dict(base, channel_id=cid, verb={"verb": "refresh"})) == {
        "status": "queued"}
    # The member's session is separate: the main session can open its own channel meanwhile.
    assert live_open(mob)["channel_id"] != cid
    assert result(mob, "mob/member_live_close", dict(base, channel_id=cid)) == {"status": "closed"}
    assert sock.expect_end()[0] is None


def test_mob_member_errors(mob):
    assert error(mob, "mob/member_live_open", {"mob_id": "other", "agent_identity": "navigator"}) == {
        "code": -32602, "message": "mob not found: other"}
    assert error(mob, "mob/member_live_open", {"mob_id": "crew", "agent_identity": "cook"})["code"] == -32602
    reply = rpc(mob, "mob/member_live_open", {"mob_id": "crew", "agent_identity": "navigator", "extra": 1})
    assert reply["id"] is None and "unknown field `extra`" in reply["error"]["message"]
    opened = live_open(mob)  # a main-session channel is not the member's
    err = error(mob, "mob/member_live_close", {"mob_id": "crew", "agent_identity": "navigator",
                                               "channel_id": opened["channel_id"]})
    assert err == {"code": -32602, "message": f"channel {opened['channel_id']} not found"}


def test_v2_mob_member_target(mob):
    target = {"type": "mob_member", "mob_id": "crew", "agent_identity": "navigator"}
    info = rpc_open_info(mob)  # the main session
    assert info["target"]["type"] == "session_target"
    client = RpcClient(mob.rpc_address)
    try:
        reply = client.request("realtime/open_info", {"target": target, "role": "primary", "turning_mode": "provider_managed"})
        assert reply["result"]["target"] == target
        bridge = {"type": "session_target", "session_id": mob.options.mob_session_id}
        reply = client.request("realtime/open_info", {"target": bridge, "role": "primary", "turning_mode": "provider_managed"})
        assert reply["error"]["code"] == -32602 and "mob-owned bridge session" in reply["error"]["message"]
        reply = client.request("realtime/status", {"target": dict(target, mob_id="nope")})
        assert reply["error"] == {"code": -32602, "message": "internal error: mob not found: nope"}
    finally:
        client.close()
