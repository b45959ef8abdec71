"""The first WebSocket message (reference 4.1), the open checks and token rules (1.6),
channel.opened, and the transport details of section 2."""

from __future__ import annotations

import json
import socket
import time

import pytest
import websocket

from meerkat_tools.devserver import Faults
from meerkat_tools.devserver.tokens import OpenError, TokenStore
from meerkat_tools.devserver.wire import OPEN_BIND_ERROR_CODES

from ._client import Channel, Closed, connect, open_frame, rpc_open_info

READY = {"state": "ready", "attempt_count": 0}


def refused(ch: Channel, code: str, message: str | None = None) -> dict:
    """channel.error{code}, channel.closed{reason: code}, then a Close 1008 with the code."""
    error = ch.recv()
    assert error["type"] == "channel.error" and error["code"] == code, error
    if message is not None:
        assert error["message"] == message
    assert ch.recv() == {"type": "channel.closed", "reason": code}
    with pytest.raises(Closed) as end:
        ch.recv()
    assert end.value.close_frame == (1008, code)
    return error


def first(srv, frame) -> Channel:
    ch = Channel(srv.ws_url)
    ch.send(frame)
    return ch


# -- decision table -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1,2]",
        '{"type":"channel.bogus"}',
        '{"protocol_version":"2"}',
        '{"type":"channel.open","protocol_version":"2","role":"primary","turning_mode":"provider_managed"}',
        '{"type":"channel.open","protocol_version":"2","open_token":"t","role":"boss","turning_mode":"provider_managed"}',
        '{"type":"channel.open","protocol_version":"999","open_token":"t","role":"primary","turning_mode":"provider_managed"}',
        '{"type":"channel.open","protocol_version":2,"open_token":"t","role":"primary","turning_mode":"provider_managed"}',
    ],
)
def test_unparsable_first_frame_is_invalid_frame(srv, text):
    ch = first(srv, text)
    error = refused(ch, "invalid_frame")
    assert error["message"].startswith("failed to parse realtime frame: ")


def test_protocol_999_with_a_valid_token_is_invalid_frame_not_unsupported_version(srv):
    info = srv.open_info()
    ch = first(srv, open_frame(info["open_token"], version="999"))
    refused(ch, "invalid_frame")
    # The token was never looked at: it still works.
    ch = first(srv, open_frame(info["open_token"]))
    assert ch.recv()["type"] == "channel.opened"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "channel.interrupt"},
        {"type": "channel.close"},
        {"type": "channel.input", "chunk": {"kind": "text_chunk", "text": "hi"}},
    ],
)
def test_valid_non_open_first_frame_is_expected_channel_open(srv, frame):
    ch = first(srv, frame)
    refused(ch, "expected_channel_open", "first realtime websocket frame must be channel.open")


@pytest.mark.parametrize("kind", ["binary", "ping", "pong"])
def test_binary_ping_pong_first_is_expected_channel_open(srv, kind):
    ch = Channel(srv.ws_url)
    if kind == "binary":
        ch.ws.send_binary(b"\x01\x02")
    elif kind == "ping":
        ch.ws.ping(b"hi")
    else:
        ch.ws.pong(b"hi")
    refused(ch, "expected_channel_open")


def test_close_first_gets_nothing(srv):
    ch = Channel(srv.ws_url)
    ch.ws.send_close(1000, b"bye")
    with pytest.raises(Closed) as end:
        ch.recv()
    assert end.value.close_frame == (1000, "bye")  # the close handshake echo, no channel.error
    assert ch.raw == []
    srv.wait_channel_ended()
    assert [e["kind"] for e in srv.frames()] == ["close"]


def test_invalid_utf8_first_frame_is_a_silent_return(srv):
    ch = Channel(srv.ws_url)
    ch.ws.send(b"\xff\xfe{", opcode=websocket.ABNF.OPCODE_TEXT)
    assert ch.expect_end() is None or ch.raw == []
    assert ch.raw == []


# -- open checks (section 1.6) ----------------------------------------------------------------


def test_unknown_token(srv):
    refused(first(srv, open_frame("6f1c2b9e-0000-4000-8000-000000000000")), "invalid_open_token", "invalid open token")


def test_expired_token_is_removed(make_server):
    srv = make_server(token_ttl=0.05)
    info = srv.open_info()
    time.sleep(0.1)  # let the 50 ms TTL pass
    refused(first(srv, open_frame(info["open_token"])), "open_token_expired", "open token expired")
    refused(first(srv, open_frame(info["open_token"])), "invalid_open_token")


@pytest.mark.parametrize(
    "role, mode, code",
    [
        ("observer", "provider_managed", "role_mismatch"),
        ("primary", "explicit_commit", "turning_mode_mismatch"),
    ],
)
def test_mismatches_keep_the_token(srv, role, mode, code):
    info = srv.open_info("primary", "provider_managed")
    refused(first(srv, open_frame(info["open_token"], role, mode)), code)
    ch = first(srv, open_frame(info["open_token"]))
    assert ch.recv()["type"] == "channel.opened"


def test_unsupported_turning_mode_keeps_the_token(make_server):
    faults = Faults(grant_turning_modes=["provider_managed"])
    srv = make_server(faults=faults)
    info = srv.open_info("primary", "explicit_commit")
    assert info["capabilities"]["turning_modes"] == ["provider_managed"]
    frame = open_frame(info["open_token"], "primary", "explicit_commit")
    refused(first(srv, frame), "unsupported_turning_mode", "requested turning mode is not supported by this target")
    faults.grant_turning_modes = None
    # Still refused for the same reason: the token (kept) carries its grant's capabilities.
    refused(first(srv, frame), "unsupported_turning_mode")


def test_realm_mismatch_removes_the_token(srv):
    info = srv.open_info()
    srv.set_realm("another-realm")
    refused(first(srv, open_frame(info["open_token"])), "unauthorized_realm")
    srv.set_realm("devserver")
    refused(first(srv, open_frame(info["open_token"])), "invalid_open_token")


def test_token_is_single_use(srv):
    info = srv.open_info()
    ch = first(srv, open_frame(info["open_token"]))
    assert ch.recv()["type"] == "channel.opened"
    ch.send({"type": "channel.close"})
    assert ch.recv() == {"type": "channel.closed", "reason": "client_closed"}
    refused(first(srv, open_frame(info["open_token"])), "invalid_open_token")


def test_target_busy_consumes_the_token(srv):
    ch, _ = connect(srv)
    info = srv.open_info()
    refused(
        first(srv, open_frame(info["open_token"])),
        "target_busy",
        "target already has an active primary realtime channel",
    )
    ch.send({"type": "channel.close"})
    ch.expect_end()
    srv.wait_channel_ended(1)
    refused(first(srv, open_frame(info["open_token"])), "invalid_open_token")
    ch2, opened = connect(srv)  # a new token works once the slot is free
    assert opened["status"] == READY


@pytest.mark.parametrize("code", OPEN_BIND_ERROR_CODES)
def test_bind_failure_fault(make_server, code):
    srv = make_server(faults=Faults(open_error=code))
    info = srv.open_info()
    error = refused(first(srv, open_frame(info["open_token"])), code)
    assert error["message"].startswith("realtime open failed: ")
    refused(first(srv, open_frame(info["open_token"])), "invalid_open_token")  # consumed
    _, opened = connect(srv)  # the fault fired once; the slot was released
    assert opened["status"] == READY


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_store_check_order():
    clock = FakeClock()
    store = TokenStore(60, mono=clock, wall=lambda: 1_700_000_000.0)
    caps = {"turning_modes": ["provider_managed"]}
    grant = store.mint("primary", "explicit_commit", {}, caps, {}, "r1")
    assert grant.expires_at == "2023-11-14T22:14:20.000000+00:00"

    def code(*args) -> str:
        with pytest.raises(OpenError) as err:
            store.redeem(*args)
        return err.value.code

    # Role is checked before mode, mode before capabilities, capabilities before realm.
    assert code(grant.token, "observer", "provider_managed", "r2") == "role_mismatch"
    assert code(grant.token, "primary", "provider_managed", "r2") == "turning_mode_mismatch"
    assert code(grant.token, "primary", "explicit_commit", "r2") == "unsupported_turning_mode"
    assert grant.token in store
    ok = store.mint("primary", "provider_managed", {}, caps, {}, "r1")
    assert code(ok.token, "primary", "provider_managed", "r2") == "unauthorized_realm"
    assert ok.token not in store
    ok = store.mint("primary", "provider_managed", {}, caps, {}, "r1")
    clock.now += 61
    # Expiry is checked before role.
    assert code(ok.token, "observer", "explicit_commit", "r2") == "open_token_expired"
    assert ok.token not in store
    assert code(ok.token, "primary", "provider_managed", "r1") == "invalid_open_token"
    fresh = store.mint("primary", "provider_managed", {}, caps, {}, "r1")
    assert store.redeem(fresh.token, "primary", "provider_managed", "r1") is fresh
    assert fresh.token not in store


# -- channel.opened and transport ------------------------------------------------------------


def test_channel_opened_shape_and_serialization(srv):
    info = rpc_open_info(srv, "primary", "explicit_commit")
    ch = first(srv, open_frame(info["open_token"], "primary", "explicit_commit"))
    opened = ch.recv()
    assert opened == {
        "type": "channel.opened",
        "protocol_version": "2",
        "status": READY,
        "capabilities": info["capabilities"],
        "role": "primary",
    }
    assert ch.raw[0].startswith(
        '{"type":"channel.opened","protocol_version":"2","status":{"state":"ready","attempt_count":0},'
        '"capabilities":{"input_kinds":["text","audio"]'
    )
    assert ch.raw[0] == json.dumps(opened, separators=(",", ":"))
    headers = {k.lower() for k in ch.ws.getheaders()}
    assert "sec-websocket-protocol" not in headers
    assert "sec-websocket-extensions" not in headers


def test_observer_opened_echoes_role_and_target_status(srv):
    obs, opened = connect(srv, "observer")
    assert opened["role"] == "observer"
    assert opened["status"] == {"state": "closed", "attempt_count": 0, "reason": "no realtime channel is open for this target"}


def test_other_paths_are_404(srv):
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(srv.ws_url.replace("/realtime/ws", "/other"), timeout=5)
    assert err.value.status_code == 404


def test_plain_http_get_is_not_upgraded(srv):
    host, port = srv.ws_url[len("ws://") :].split("/")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /realtime/ws HTTP/1.1\r\nHost: x\r\n\r\n")
        head = sock.recv(200)
    assert head.startswith(b"HTTP/1.1 4")


def test_open_delay_holds_channel_opened(make_server):
    srv = make_server(faults=Faults(open_delay=0.3))
    info = srv.open_info()
    started = time.monotonic()
    ch = first(srv, open_frame(info["open_token"]))
    assert ch.recv()["type"] == "channel.opened"
    assert time.monotonic() - started >= 0.3
    assert srv.faults.open_delay == 0  # fired once
