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
    assert list(line) == ["rpc", "rest", "ws_url", "session_id"]
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
        ({}, 400, "INVALID_PARAMS", "validation"),
        ("UNKNOWN_SESSION", 404, "SESSION_NOT_FOUND", "session"),
        ("EXPLICIT", 501, "CAPABILITY_UNAVAILABLE", "capability"),
    ],
)
def test_rest_wire_errors(make_server, body, http_status, code, category):
    srv = make_server(turning_modes=("provider_managed",))
    if body == "UNKNOWN_SESSION":
        body = dict(open_params(srv), target={"type": "session_target", "session_id": "other"})
    elif body == "EXPLICIT":
        body = open_params(srv, mode="explicit_commit")
    status, answer = rest_post(srv, "/realtime/open_info", body)
    assert status == http_status
    assert answer["code"] == code and answer["category"] == category
    assert isinstance(answer["message"], str) and answer["message"]
    assert set(answer) <= {"code", "category", "message", "details"}


def test_rest_routes_methods_and_bad_json(srv):
    status, _ = rest_post(srv, "/realtime/open_info", None, raw=b"{oops")
    assert status == 400
    status, _ = rest_post(srv, "/realtime/open_info", None, raw=b"", method="GET")
    assert status == 405
    status, _ = rest_post(srv, "/realtime/nothing", {})
    assert status == 404


def test_rest_rpc_unreachable_is_502(make_server):
    srv = make_server(faults=Faults(rest_rpc_unreachable=True))
    status, body = rest_post(srv, "/realtime/open_info", open_params(srv))
    assert status == 502
    assert body["code"] == "PROVIDER_ERROR" and body["category"] == "provider"
