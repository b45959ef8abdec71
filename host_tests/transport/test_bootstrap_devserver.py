"""Bootstrap and the WebSocket transport against the development server (tools/meerkat_tools/
devserver): realtime/open_info over JSON-RPC and REST, then channel.open / channel.opened /
channel.close over the client's own WebSocket, on CPython and on the unix port. (Protocol v2: the dev server
runs that surface here; the live surface's bootstrap has its own tests.)"""

from __future__ import annotations

import pytest

devserver = pytest.importorskip("meerkat_tools.devserver")


@pytest.fixture(scope="module")
def dev():
    with devserver.DevServer.running(devserver.ServerOptions(surface="v2", turning_modes=("provider_managed",))) as srv:
        yield srv


def _settings(dev, transport, **extra):
    s = {"target": dev.target, "timeout_ms": 5000}
    if transport == "rpc":
        s["rpc"] = "%s:%d" % dev.rpc_address
    else:
        s["rest"] = dev.rest_url
    s.update(extra)
    return s


@pytest.mark.parametrize("transport", ["rpc", "rest"])
def test_open_channel_through_the_devserver(client, dev, transport):
    # 140K: on the stock 64-bit binary the code of bootstrap, rpc, shapes, the v2 codec and the
    # WebSocket is itself on the heap (about 70 KB of .mpy); frozen into a 32-bit image it is not,
    # and the whole device runs at 110K there (host_tests/e2e).
    r = client.run("sc_boot", "open_channel", heap="140K", settings=_settings(dev, transport), timeout=60)
    assert r["ws_url"] == dev.ws_url
    assert (r["opened"], r["role"]) == ("channel.opened", "primary")
    assert r["after_close"][-1] == "channel.closed"
    assert r["close_code"] == 1006  # Meerkat drops the socket after channel.closed, no Close frame
    assert not any("open_token" in line for line in r["log"])


@pytest.mark.parametrize("transport", ["rpc", "rest"])
def test_devserver_errors(client, dev, transport):
    unknown = "019e0000-de00-7000-8000-000000000000"  # a well-formed id of no session there
    r = client.run("sc_boot", "fetch", settings=_settings(dev, transport, target={"type": "session_target", "session_id": unknown}))
    assert (r.get("kind"), r.get("retryable")) == ("session_not_found", False), r
    # Not a session id at all: the server's SessionId::parse refuses it as invalid params.
    r = client.run("sc_boot", "fetch", settings=_settings(dev, transport, target={"type": "session_target", "session_id": "nope"}))
    assert (r.get("kind"), r.get("retryable")) == ("invalid_params", False), r
    r = client.run("sc_boot", "fetch", settings=_settings(dev, transport, turning_mode="explicit_commit"))
    assert (r.get("kind"), r.get("retryable")) == ("turning_mode_unsupported", False), r
