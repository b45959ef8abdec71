"""meerkat_rt.v2.bootstrap against JSON-lines and REST stubs of realtime/open_info (and the
development server when it is importable), with the client on CPython and the unix port."""

from __future__ import annotations

import json

import pytest
from wspeers import TOKEN

POLICY = {"max_attempts": 3, "initial_backoff_ms": 500, "max_backoff_ms": 5000, "max_total_ms": 30000}
CONFIG = {"tool_timeout": {"type": "finite", "timeout_ms": 15000}}


def _settings(peers, transport, session_id, **extra):
    s = {"target": {"type": "session_target", "session_id": session_id}, "timeout_ms": 3000}
    if transport == "rpc":
        s["rpc"] = "127.0.0.1:%d" % peers.ports["rpc"]
    else:
        s["rest"] = "http://127.0.0.1:%d" % peers.ports["rest"]
    s.update(extra)
    return s


def _no_token_anywhere(r):
    assert TOKEN not in json.dumps({k: v for k, v in r.items() if k != "result"})


@pytest.mark.parametrize("transport", ["rpc", "rest"])
def test_open_info_request_and_rewrite(client, peers, transport):
    s = _settings(peers, transport, "bind0", role="primary", turning_mode="explicit_commit",
                  reconnect_policy=POLICY, channel_config=CONFIG)
    r = client.run("sc_boot", "fetch", settings=s)
    info = r["result"]
    assert info["ws_url"] == "ws://127.0.0.1:4900/realtime/ws"  # 0.0.0.0 -> the host we reached
    assert info["open_token"] == TOKEN and info["default_protocol_version"] == "2"
    assert info["capabilities"]["audio_input_format"]["sample_rate_hz"] == 24000
    _no_token_anywhere(r)
    req = [q for q in peers.requests if q["params"].get("reconnect_policy") == POLICY][-1]
    assert req["method"] == "realtime/open_info"
    assert req["params"] == {"target": s["target"], "role": "primary", "turning_mode": "explicit_commit",
                             "reconnect_policy": POLICY, "channel_config": CONFIG}


def test_lan_ws_url_is_kept(client, peers):
    r = client.run("sc_boot", "fetch", settings=_settings(peers, "rpc", "lan"))
    assert r["result"]["ws_url"] == "ws://192.168.1.50:4900/realtime/ws"


def test_rest_body_delimited_by_close(client, peers):
    r = client.run("sc_boot", "fetch", settings=_settings(peers, "rest", "noclen"))
    assert r["result"]["ws_url"] == "ws://127.0.0.1:4900/realtime/ws"


@pytest.mark.parametrize("transport", ["rpc", "rest"])
@pytest.mark.parametrize(
    "session_id,mode,kind,retryable,words",
    [
        ("missing", "provider_managed", "session_not_found", False, "session not found"),
        ("notrealtime", "provider_managed", "capability_unavailable", False, "does not support realtime"),
        ("noexplicit", "explicit_commit", "turning_mode_unsupported", False, "turning mode"),
        ("badparams", "provider_managed", "invalid_params", False, "invalid params"),
        ("internal", "provider_managed", "server", True, "internal error"),
        ("badinfo", "provider_managed", "protocol", False, "missing field open_info.ws_url"),
    ],
)
def test_server_errors_are_clear(client, peers, transport, session_id, mode, kind, retryable, words):
    r = client.run("sc_boot", "fetch", settings=_settings(peers, transport, session_id, turning_mode=mode))
    assert (r.get("kind"), r.get("retryable")) == (kind, retryable), r
    assert r["error"].startswith("realtime/open_info") and words in r["error"], r
    _no_token_anywhere(r)


@pytest.mark.parametrize("transport", ["rpc", "rest"])
def test_timeout(client, peers, transport):
    r = client.run("sc_boot", "fetch", settings=_settings(peers, transport, "slow", timeout_ms=300))
    assert (r["kind"], r["retryable"]) == ("timeout", True), r
    assert "no answer within 300 ms" in r["error"] and "127.0.0.1:%d" % peers.ports[transport] in r["error"]


@pytest.mark.parametrize("transport", ["rpc", "rest"])
def test_unreachable(client, peers, transport):
    s = _settings(peers, transport, "x")
    port = peers.ports["closed"]
    s[transport] = ("127.0.0.1:%d" if transport == "rpc" else "http://127.0.0.1:%d") % port
    r = client.run("sc_boot", "fetch", settings=s)
    assert (r["kind"], r["retryable"]) == ("unreachable", True), r
    assert "cannot connect to 127.0.0.1:%d" % port in r["error"]


@pytest.mark.parametrize("transport", ["rpc", "rest"])
def test_hangup_before_the_answer(client, peers, transport):
    r = client.run("sc_boot", "fetch", settings=_settings(peers, transport, "hangup"))
    assert (r["kind"], r["retryable"]) == ("unreachable", True), r
    assert "closed before the answer" in r["error"]


def test_not_json(client, peers):
    r = client.run("sc_boot", "fetch", settings=_settings(peers, "rpc", "garbage"))
    assert (r["kind"], r["retryable"]) == ("protocol", False) and "not valid JSON" in r["error"], r


def test_rest_unknown_route(client, peers):
    s = _settings(peers, "rest", "x")
    s["rest"] += "/nope"
    r = client.run("sc_boot", "fetch", settings=s)
    assert (r["kind"], r["retryable"]) == ("protocol", False) and "404" in r["error"], r


@pytest.mark.parametrize(
    "settings,words",
    [
        ({"target": {"type": "session_target", "session_id": "x"}}, "'rpc'"),
        ({"rpc": "127.0.0.1:1", "target": {"type": "nope"}}, "target.type"),
        ({"rpc": "127.0.0.1:1", "target": {"type": "session_target", "session_id": "x"}, "role": "boss"}, "role"),
    ],
)
def test_bad_settings(client, settings, words):
    r = client.run("sc_boot", "fetch", settings=settings)
    assert (r["kind"], r["retryable"]) == ("invalid_params", False) and words in r["error"], r


@pytest.mark.parametrize("transport", ["rpc", "rest"])
def test_a_huge_answer_is_refused_and_retryable(client, peers, transport):
    r = client.run("sc_boot", "fetch", settings=_settings(peers, transport, "huge"))
    assert (r["kind"], r["retryable"]) == ("too_large", True), r
    assert "too large" in r["error"]
