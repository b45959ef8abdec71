"""meerkat_rt.ws against real peers on 127.0.0.1, with the client on CPython and on the
MicroPython unix port (110K heap): echo, fragments, pings, every close path, size limits,
protocol violations, handshake failures, keepalive."""

from __future__ import annotations


def test_echo_text_and_binary_then_client_close(client, peers):
    cid = client.cid("echo")
    r = client.run("sc_ws", "echo", url=peers.url("ws", f"/echo?id={cid}"))
    assert r["bad"] == []
    assert (r["close_code"], r["close_reason"], r["open"]) == (1000, "done", False)
    assert r["frames_in"] == r["frames_out"] == 9  # 8 data frames and the close, each way
    seen = peers.wait(cid)
    assert seen["echoed"] == 8
    assert (seen["close_code"], seen["close_reason"]) == (1000, "done")  # the server got our close


def test_upgrade_request_headers(client, peers):
    cid = client.cid("headers")
    r = client.run("sc_ws", "recv_all", url=peers.url("raw", f"/eof?id={cid}"))
    req = peers.wait(cid)["request"]
    assert req["upgrade"].lower() == "websocket" and "upgrade" in req["connection"].lower()
    assert req["sec-websocket-version"] == "13"
    assert len(req["sec-websocket-key"]) == 24
    assert req["host"] == "127.0.0.1:%d" % peers.ports["raw"]
    assert r["got"] == ["last words"]


def test_fragmented_messages_are_reassembled(client, peers):
    cid = client.cid("frag")
    r = client.run("sc_ws", "recv_all", n=3, url=peers.url("ws", f"/fragments?id={cid}"))
    assert r["got"] == ["alpha-beta-gamma", "hex:0001feff", "end"]
    assert r["close_code"] == 1000


def test_control_frames_between_fragments_empty_and_64bit_frames(client, peers):
    cid = client.cid("interleave")
    r = client.run("sc_ws", "recv_all", n=3, url=peers.url("raw", f"/interleave?id={cid}"))
    assert r["got"] == ["one,two,three", "", "hex:616263"]
    seen = peers.wait(cid)
    assert (seen["pong_op"], seen["pong"]) == (10, "ping-data")  # the ping was answered in order
    assert seen["client_close"] == 1000


def test_frames_split_across_tiny_tcp_segments(client, peers):
    cid = client.cid("split")
    r = client.run("sc_ws", "recv_all", n=2, url=peers.url("raw", f"/split?id={cid}"))
    assert r["got"] == ["s" * 300, "hex:" + bytes(range(200)).hex()]
    seen = peers.wait(cid)
    assert (seen["pong_op"], seen["pong"]) == (10, "p")


def test_server_ping_is_answered(client, peers):
    r = client.run("sc_ws", "recv_all", n=1, url=peers.url("ws", "/ping"))
    assert r["got"] == ["pong received"]


def test_burst_of_messages_arrives_complete_and_in_order(client, peers):
    # Many small messages in one TCP read: the default sink holds one message, the parser waits
    # for it to be taken (back-pressure), nothing is overwritten.
    r = client.run("sc_ws", "recv_all", n=50, url=peers.url("ws", "/burst?n=50"))
    assert r["got"] == ["message %d" % i for i in range(50)]


def test_server_close_is_echoed(client, peers):
    cid = client.cid("sclose")
    r = client.run("sc_ws", "recv_all", url=peers.url("ws", f"/server_close?id={cid}&code=4000&reason=bye"))
    assert r["got"] == ["hello"]
    assert (r["close_code"], r["close_reason"], r["open"], r["error"]) == (4000, "bye", False, None)
    assert peers.wait(cid)["echo_code"] == 4000


def test_server_close_without_code(client, peers):
    cid = client.cid("nocode")
    r = client.run("sc_ws", "recv_all", url=peers.url("raw", f"/nocode?id={cid}"))
    assert (r["close_code"], r["error"]) == (1005, None)
    seen = peers.wait(cid)
    assert seen["client_close_len"] == 0  # echoed as a close frame without a body


def test_eof_without_close_frame_is_1006(client, peers):
    r = client.run("sc_ws", "recv_all", url=peers.url("raw", "/eof"))
    assert r["got"] == ["last words"]
    assert (r["close_code"], r["error"], r["open"]) == (1006, None, False)
    assert "without a close frame" in r["close_reason"]


def test_oversized_message_closes_1009(client, peers):
    cid = client.cid("big")
    r = client.run("sc_ws", "recv_all", max=1000, url=peers.url("ws", f"/big?id={cid}&n=5000"))
    assert r["got"] == []
    assert r["error"] == ["message of 5000+ bytes exceeds max_message 1000", 1009]
    assert r["close_code"] == 1009
    assert peers.wait(cid)["close_code"] == 1009


def test_oversized_64bit_length_closes_1009(client, peers):
    cid = client.cid("big64")
    r = client.run("sc_ws", "recv_all", url=peers.url("ws", f"/big?id={cid}&n=70000"))
    assert r["error"] == ["message of 70000+ bytes exceeds max_message 16384", 1009]
    assert peers.wait(cid)["close_code"] == 1009


def test_masked_server_frame_closes_1002(client, peers):
    cid = client.cid("masked")
    r = client.run("sc_ws", "recv_all", url=peers.url("raw", f"/masked?id={cid}"))
    assert r["got"] == [] and r["error"][1] == 1002 and "masked" in r["error"][0]
    assert r["close_code"] == 1002
    assert peers.wait(cid)["client_close"] == 1002


def test_reserved_bits_close_1002(client, peers):
    cid = client.cid("rsv")
    r = client.run("sc_ws", "recv_all", url=peers.url("raw", f"/rsv?id={cid}"))
    assert r["error"][1] == 1002 and "reserved" in r["error"][0]
    assert peers.wait(cid)["client_close"] == 1002


def test_unknown_opcode_closes_1002(client, peers):
    cid = client.cid("badop")
    r = client.run("sc_ws", "recv_all", url=peers.url("raw", f"/badop?id={cid}"))
    assert r["error"] == ["unknown opcode 3", 1002]
    assert peers.wait(cid)["client_close"] == 1002


def test_non_101_answer_quotes_the_status_line(client, peers):
    r = client.run("sc_ws", "connect_error", url=peers.url("raw", "/status403"))
    assert "'HTTP/1.1 403 Forbidden'" in r["error"], r


def test_bad_accept_is_refused(client, peers):
    r = client.run("sc_ws", "connect_error", url=peers.url("raw", "/badaccept"))
    assert "Sec-WebSocket-Accept" in r["error"], r


def test_handshake_timeout(client, peers):
    r = client.run("sc_ws", "connect_error", timeout_ms=400, url=peers.url("raw", "/silent"))
    assert "timeout after 400 ms during the upgrade" in r["error"], r
    assert 350 <= r["ms"] < 3000


def test_unreachable_port(client, peers):
    r = client.run("sc_ws", "connect_error", url="ws://127.0.0.1:%d/x" % peers.ports["closed"])
    assert r["error"].startswith("cannot connect to 127.0.0.1:%d" % peers.ports["closed"]), r


def test_unresolvable_host(client, peers):
    r = client.run("sc_ws", "connect_error", url="ws://no-such-host.invalid/x")
    assert r["error"].startswith("cannot resolve no-such-host.invalid"), r


def test_keepalive_pings_keep_a_live_link(client, peers):
    r = client.run("sc_ws", "keepalive_ok", url=peers.url("ws", "/echo"))
    assert r["open"] and r["close_code"] is None
    assert r["pongs"] >= 3


def test_no_ping_before_keepalive_and_dead_link_detected(client, peers):
    cid = client.cid("watch")
    r = client.run("sc_ws", "keepalive_dead", url=peers.url("raw", f"/watch?id={cid}"))
    assert (r["open"], r["close_code"], r["close_reason"]) == (False, 1006, "keepalive timeout")
    assert 250 <= r["ms"] < 2000
    seen = peers.wait(cid)["seen"]
    assert seen[0] == "keepalive on"  # nothing, in particular no ping, before keepalive()
    assert 9 in seen[1:]


def test_send_after_close_is_refused(client, peers):
    cid = client.cid("after")
    r = client.run("sc_ws", "send_after_close", url=peers.url("ws", f"/echo?id={cid}"))
    assert (r["close_code"], r["close_reason"]) == (4001, "client bye")
    assert r["error"].startswith("not open") and r["can_send"] is False and r["nowait"] is False
    assert peers.wait(cid)["close_code"] == 4001


def test_cancelled_connect_leaves_no_socket(client, peers):
    r = client.run("sc_ws", "connect_cancelled", url=peers.url("raw", "/silent"))
    assert r["cancelled"] and r["sock"] and r["state"] == 3 and not r["open"], r
