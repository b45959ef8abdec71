"""The scripted server itself, against the device with nothing hostile in the script: the
handshakes of both surfaces, a text turn, the clean close, and what the server records."""

from __future__ import annotations

import pytest
from rig import device, opened, send_text

from hostile import Hostile


@pytest.mark.parametrize("surface", ["v2", "live"])
def test_a_friendly_script_holds_a_text_turn(tmp_path, surface):
    with Hostile.running(surface) as srv:
        with device(srv, tmp_path) as (dev, rec):
            opened(dev)
            send_text(dev, srv, "hello")
            dev.wait_event("turn_completed", 20)
            dev.wait_event("reply_done", 15)
        summary = dev.summary
    assert summary["state"] == "closed" and summary["reconnects"] == 0
    assert [f.text_input for f in srv.frames if f.text_input] == ["hello"]
    if surface == "v2":
        assert [c.method for c in srv.rpc()] == ["realtime/open_info"]
        assert srv.client_frames("channel.open")[0].json["open_token"] == srv.tokens[0]
        assert srv.client_frames("channel.close")  # the device closed politely
    else:
        assert [c.method for c in srv.rpc()] == ["live/open", "live/close"]


@pytest.mark.parametrize("duplex", ["half", "full"])
def test_auto_surface_falls_back_on_v2(tmp_path, duplex):
    with Hostile.running("v2") as srv:
        with device(srv, tmp_path, server={"surface": "auto"}, audio={"duplex": duplex}) as (dev, rec):
            opened(dev)
        assert [c.method for c in srv.rpc()] == ["live/open", "realtime/open_info"]
        assert "error" in srv.rpc()[0].answer and srv.rpc()[0].answer["error"]["code"] == -32601
    # Protocol v2 cancels a reply on any input: full duplex, fine on live, becomes half, said once.
    said = [line for line in dev.logs() if "audio.duplex full runs as half" in line]
    assert len(said) == (1 if duplex == "full" else 0), dev.logs()


def test_auto_surface_stops_when_the_server_speaks_neither(tmp_path):
    # A Meerkat without its realtime listeners: both bootstrap methods are unknown. One try of
    # each, then a clear error, not a switch back and forth at full speed.
    with Hostile.running("v2") as srv:
        srv.answers["realtime/open_info"] = [{"error": {"code": -32601, "message": "Method not found"}}] * 5
        with device(srv, tmp_path, server={"surface": "auto"}) as (dev, rec):
            dev.wait_event("state", 20, where=lambda s: s == "error")
            dev.wait_for(lambda: dev.summary, 20, "the summary")
        assert [c.method for c in srv.rpc()] == ["live/open", "realtime/open_info"]
    assert dev.summary["state"] == "error" and "neither live/open nor realtime/open_info" in dev.summary["error"]
