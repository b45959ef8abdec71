"""Bootstrap conformance: JSON-RPC over TCP (reference 1.2) and the REST proxy (1.3)."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest

from meerkat_tools.devserver import Faults

from ._client import RpcClient, open_params, rest_post, rpc_open_info, target

FULL_CAPS = {
    "input_kinds": ["text", "audio"],
    "output_kinds": ["text", "audio"],
    "turning_modes": ["provider_managed", "explicit_commit"],
    "interrupt_supported": True,
    "transcript_supported": True,
    "tool_lifecycle_events_supported": True,
    "video_supported": False,
    "audio_input_format": {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1},
    "audio_output_format": {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1},
}


def check_open_info(srv, info: dict, ttl: float = 60.0) -> None:
    assert list(info) == [
        "ws_url",
        "open_token",
        "expires_at",
        "target",
        "supported_protocol_versions",
        "default_protocol_version",
        "capabilities",
    ]
    host, port = srv.rpc_address
    assert re.fullmatch(rf"ws://{re.escape(host)}:\d+/realtime/ws", info["ws_url"])
    assert info["ws_url"] == srv.ws_url
    token = uuid.UUID(info["open_token"])
    assert token.version == 4 and str(token) == info["open_token"]
    assert info["expires_at"].endswith("+00:00")
    expires = dt.datetime.fromisoformat(info["expires_at"])
    left = (expires - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert ttl - 5 < left <= ttl + 1
    assert info["target"] == target(srv)
    assert info["supported_protocol_versions"] == ["2"]
    assert info["default_protocol_version"] == "2"
    assert info["capabilities"] == FULL_CAPS


def test_open_info_over_tcp(srv):
    info = rpc_open_info(srv)
    check_open_info(srv, info)
    assert rpc_open_info(srv)["open_token"] != info["open_token"]


def test_ready_line_and_addresses(srv):
    import json

    line = json.loads(srv.ready_line())
    assert list(line) == ["surface", "rpc", "rest", "ws_url", "session_id"]
    assert line["surface"] == "v2"
    assert line["rpc"] == "%s:%d" % srv.rpc_address
    assert line["rest"] == srv.rest_url and line["ws_url"] == srv.ws_url
    assert line["session_id"] == srv.session_id
    assert srv.rpc_address[0] == "127.0.0.1"


def test_jsonl_connection_serves_many_requests_and_matches_ids(srv):
    client = RpcClient(srv.rpc_address)
    try:
        # initialize is optional and not gated on; a notification gets no answer.
        client.send_line(b'{"jsonrpc":"2.0","method":"initialize","params":{}}')
        reply = client.request("realtime/status", {"target": target(srv)}, req_id="abc")
        assert reply["id"] == "abc" and reply["jsonrpc"] == "2.0"
        assert reply["result"] == {
            "status": {"state": "closed", "attempt_count": 0, "reason": "no realtime channel is open for this target"}
        }
        reply = client.request("realtime/capabilities", {"target": target(srv)}, req_id=7)
        assert reply == {"jsonrpc": "2.0", "id": 7, "result": {"capabilities": FULL_CAPS}}
        reply = client.request("initialize", {})
        assert "result" in reply
        reply = client.request("realtime/open_info", open_params(srv, "observer", "explicit_commit"))
        assert reply["result"]["open_token"]
    finally:
        client.close()


@pytest.mark.parametrize(
    "params, code",
    [
        (None, -32602),
        ([], -32602),
        ({}, -32602),
        ({"target": {"type": "session_target"}, "role": "primary", "turning_mode": "provider_managed"}, -32602),
        ({"target": {"type": "nope"}, "role": "primary", "turning_mode": "provider_managed"}, -32602),
        ("TARGET", -32602),  # replaced by the real target below, with a bad role
        ("MODE", -32602),
        ("POLICY", -32602),
        ("MOB", -32602),
        ("UNKNOWN_SESSION", -32001),
        ("NOT_A_UUID", -32602),
    ],
)
def test_open_info_errors(srv, params, code):
    good = open_params(srv)
    if params == "TARGET":
        params = dict(good, role="boss")
    elif params == "MODE":
        params = dict(good, turning_mode="continuous")
    elif params == "POLICY":
        params = dict(good, reconnect_policy={"max_attempts": -1})
    elif params == "MOB":
        params = dict(good, target={"type": "mob_member", "mob_id": "m", "agent_identity": "a"})
    elif params == "UNKNOWN_SESSION":
        params = dict(good, target={"type": "session_target", "session_id": "019e0000-0000-7000-8000-000000000000"})
    elif params == "NOT_A_UUID":
        params = dict(good, target={"type": "session_target", "session_id": "019e-nope"})
    client = RpcClient(srv.rpc_address)
    try:
        reply = client.request("realtime/open_info", params)
    finally:
        client.close()
    assert "result" not in reply
    assert reply["error"]["code"] == code, reply
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]


def test_explicit_commit_not_offered_is_capability_unavailable(make_server):
    srv = make_server(turning_modes=("provider_managed",))
    client = RpcClient(srv.rpc_address)
    try:
        reply = client.request("realtime/open_info", open_params(srv, mode="explicit_commit"))
        assert reply["error"] == {
            "code": -32020,
            "message": "turning mode 'explicit_commit' is not supported for this realtime target",
        }
        caps = client.request("realtime/capabilities", {"target": target(srv)})["result"]["capabilities"]
        assert caps["turning_modes"] == ["provider_managed"]
    finally:
        client.close()


def test_json_rpc_protocol_errors(srv):
    client = RpcClient(srv.rpc_address)
    try:
        client.send_line(b"{not json")
        assert client.read()["error"]["code"] == -32700
        client.send_line(b'{"jsonrpc":"2.0","id":3}')
        assert client.read() == {"jsonrpc": "2.0", "id": 3, "error": {"code": -32600, "message": "Invalid Request"}}
        reply = client.request("realtime/nope", {})
        assert reply["error"]["code"] == -32601
        assert client.request("realtime/status", {"target": target(srv)})["result"]
    finally:
        client.close()


def test_bootstrap_error_fault(make_server):
    srv = make_server(faults=Faults(bootstrap_error=(-32020, "realtime bootstrap eligibility denied: test")))
    client = RpcClient(srv.rpc_address)
    try:
        reply = client.request("realtime/open_info", open_params(srv))
        assert reply["error"] == {"code": -32020, "message": "realtime bootstrap eligibility denied: test"}
    finally:
        client.close()
    status, body = rest_post(srv, "/realtime/open_info", open_params(srv))
    assert status == 501
    assert body == {
        "code": "CAPABILITY_UNAVAILABLE",
        "category": "capability",
        "message": "realtime bootstrap eligibility denied: test",
    }


# -- REST ---------------------------------------------------------------------------------


def test_rest_open_info_status_capabilities(srv):
    status, info = rest_post(srv, "/realtime/open_info", open_params(srv))
    assert status == 200
    check_open_info(srv, info)
    status, body = rest_post(srv, "/realtime/status", {"target": target(srv)})
    assert status == 200 and body["status"]["state"] == "closed"
    status, body = rest_post(srv, "/realtime/capabilities", {"target": target(srv)})
    assert status == 200 and body == {"capabilities": FULL_CAPS}


@pytest.mark.parametrize(
    "body, http_status, code, category",
    [
        ("NOT_A_UUID", 400, "INVALID_PARAMS", "validation"),
        ("UNKNOWN_SESSION", 404, "SESSION_NOT_FOUND", "session"),
        ("EXPLICIT", 501, "CAPABILITY_UNAVAILABLE", "capability"),
    ],
)
def test_rest_wire_errors(make_server, body, http_status, code, category):
    srv = make_server(turning_modes=("provider_managed",))
    if body == "UNKNOWN_SESSION":
        body = dict(open_params(srv), target={"type": "session_target", "session_id": "019e0000-0000-7000-8000-000000000001"})
    elif body == "NOT_A_UUID":
        body = dict(open_params(srv), target={"type": "session_target", "session_id": "other"})
    elif body == "EXPLICIT":
        body = open_params(srv, mode="explicit_commit")
    status, answer = rest_post(srv, "/realtime/open_info", body)
    assert status == http_status
    assert answer["code"] == code and answer["category"] == category
    assert isinstance(answer["message"], str) and answer["message"]
    assert set(answer) <= {"code", "category", "message", "details"}


def test_rest_routes_and_methods(srv):
    status, _ = rest_post(srv, "/realtime/open_info", None, raw=b"", method="GET")
    assert status == 405
    status, _ = rest_post(srv, "/realtime/nothing", {})
    assert status == 404


@pytest.mark.parametrize(
    "raw, content_type, http_status, prefix",
    [
        (b"{oops", "application/json", 400, "Failed to parse the request body as JSON: "),
        (b"{}", "application/json", 422, "Failed to deserialize the JSON body into the target type: "),
        (b'{"target":{"type":"session_target","session_id":"x"},"role":"boss","turning_mode":"provider_managed"}',
         "application/json", 422, "Failed to deserialize the JSON body into the target type: "),
        (b"{}", None, 415, "Expected request with `Content-Type: application/json`"),
        (b"{}", "text/plain", 415, "Expected request with `Content-Type: application/json`"),
    ],
)
def test_rest_body_is_checked_before_any_rpc_call(srv, raw, content_type, http_status, prefix):
    """Corrections 6: axum's Json extractor answers bad bodies itself, in text/plain, and the
    RPC host never sees them."""
    before = len(srv.rpc_calls())
    status, answer = rest_post(srv, "/realtime/open_info", None, raw=raw, content_type=content_type)
    assert status == http_status
    assert answer[0] == "text/plain" and answer[1].startswith(prefix)
    assert len(srv.rpc_calls()) == before


def test_rest_forwards_the_typed_request(srv):
    body = dict(open_params(srv), unknown_field="dropped")
    status, info = rest_post(srv, "/realtime/open_info", body, content_type="application/json; charset=utf-8")
    assert status == 200 and info["open_token"]
    forwarded = srv.rpc_calls("realtime/open_info")[-1]["request"]
    assert forwarded["id"] == 1
    assert "unknown_field" not in forwarded["params"]
    assert forwarded["params"]["target"] == target(srv)


def test_rest_rpc_unreachable_is_502(make_server):
    srv = make_server(faults=Faults(rest_rpc_unreachable=True))
    status, body = rest_post(srv, "/realtime/open_info", open_params(srv))
    assert status == 502
    assert body["code"] == "PROVIDER_ERROR" and body["category"] == "provider"


# -- check order (corrections 6) ------------------------------------------------------------------


def rpc_error(srv, method: str, params) -> dict:
    client = RpcClient(srv.rpc_address)
    try:
        reply = client.request(method, params)
    finally:
        client.close()
    assert "result" not in reply, reply
    return reply["error"]


@pytest.mark.parametrize(
    "params, code, message",
    [
        (None, -32602, "missing params"),
        ({}, -32602, "missing target"),
        ([1], -32602, "missing target"),
        ({"target": {}}, -32602, "missing target.type"),
        ({"target": {"type": "session_target"}}, -32602, "missing target.session_id"),
        ({"target": {"type": "robot"}}, -32602, "unsupported target.type 'robot'"),
    ],
)
@pytest.mark.parametrize("method", ["realtime/open_info", "realtime/status", "realtime/capabilities"])
def test_structural_target_errors(srv, method, params, code, message):
    assert rpc_error(srv, method, params) == {"code": code, "message": message}


def test_non_uuid_session_is_invalid_params_from_session_id_parse(srv):
    error = rpc_error(srv, "realtime/open_info", {"target": {"type": "session_target", "session_id": "nope"},
                                                  "role": "primary", "turning_mode": "provider_managed"})
    assert error["code"] == -32602 and error["message"].startswith("invalid character")


def test_session_is_checked_before_typed_params(srv):
    unknown = {"type": "session_target", "session_id": "019e0000-0000-7000-8000-000000000002"}
    # A bad role with an unknown session: the session error wins.
    error = rpc_error(srv, "realtime/open_info", {"target": unknown, "role": "boss", "turning_mode": "x"})
    assert error == {"code": -32001, "message": f"Session not found: {unknown['session_id']}"}
    # With the right session the typed parse fails next.
    error = rpc_error(srv, "realtime/open_info", {"target": target(srv), "role": "boss",
                                                  "turning_mode": "provider_managed"})
    assert error["code"] == -32602 and error["message"].startswith("Invalid params: unknown variant `boss`")
    error = rpc_error(srv, "realtime/open_info", {"target": target(srv), "role": "primary"})
    assert error["code"] == -32602 and error["message"] == "Invalid params: missing field `turning_mode`"


def test_rpc_calls_are_recorded(srv):
    rpc_open_info(srv)
    calls = srv.rpc_calls("realtime/open_info")
    assert len(calls) == 1
    assert calls[0]["request"]["method"] == "realtime/open_info"
    assert calls[0]["response"]["result"]["open_token"]
    assert calls[0]["t"] <= calls[0]["t_done"]
