"""Live-surface fault suite: the device (simulated board, reference image; some on CPython too)
against a scripted server that does what a real or a broken Meerkat 0.6.5+ server may do
(live/* JSON-RPC, /live/ws observations). Every test ends with rig.clean(): the host read
every line, no crash, no MemoryError, no token in the device's log."""

from __future__ import annotations

import pytest
from harness import played_prefix_ms, wav_pcm
from rig import RUNTIMES, absent, device, max_message, opened, send_text, stats, wait_stats

from hostile import Hostile, live_audio, obs, pcm, split

FAST_KEEPALIVE = {"interval_ms": 300, "timeout_ms": 1500}


def _methods(srv):
    return [c.method for c in srv.rpc()]


def _channel(call):
    """The channel a live/open answer opened."""
    return call.answer["result"]["channel_id"]


# ------------------------------------------------------------------ invented observations


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_new_observation_per_frame_keeps_the_counters_bounded(tmp_path, runtime):
    async def flood(c):
        await c.accept()
        for i in range(400):
            await c.send_json(obs(f"invented_{i:03d}", n=i))
        await c.send_json(obs("user_transcript_final", text="flood over"))

    with Hostile.running("live") as srv:
        srv.scripts = [flood]
        with device(srv, tmp_path, runtime) as (dev, rec):
            dev.wait_event("input_transcript_final", 30, where=lambda e: e["text"] == "flood over")
            s = stats(dev)
            events = s["events"]
            assert len(events) <= 25 and events["other"] >= 400 - 24, events
            assert sum(events.values()) == 402  # ready, the flood, the marker: none lost
            send_text(dev, srv, "still there?")
            dev.wait_event("turn_completed", 20)
            dev.wait_event("reply_done", 15)
    assert dev.summary["state"] == "closed" and "error" not in dev.summary
    assert dev.summary["reconnects"] == 0 and len(srv.conns) == 1


# ------------------------------------------------------------------ malformed and oversized


def test_malformed_observations_are_dropped_and_counted(tmp_path):
    async def malformed(c):
        await c.accept()
        await c.send('{"observation":"assistant_transcript_delta","delta":5}')  # a field of the wrong type
        await c.send('{"observation":"user_transcript_final"}')  # a missing field
        await c.send('{"observation":')  # not JSON
        await c.send("[1, 2, 3]")  # not an object
        await c.send('{"neither":"observation nor error"}')
        await c.send_json(obs("user_transcript_final", text="marker"))

    with Hostile.running("live") as srv:
        srv.scripts = [malformed]
        with device(srv, tmp_path) as (dev, rec):
            dev.wait_event("input_transcript_final", 15, where=lambda e: e["text"] == "marker")
            s = stats(dev)
            send_text(dev, srv, "are you ok?")
            dev.wait_event("turn_completed", 20)
    assert s["drops"]["malformed"] == 5 and s["downlink_dropped"] == 5
    assert len([line for line in dev.logs() if "dropped (malformed)" in line]) == 5  # one line each
    assert s["reconnects"] == 0 and len(srv.conns) == 1


def test_an_oversized_observation_is_dropped_and_counted_and_one_under_it_delivered(tmp_path):
    async def sizes(c):
        await c.accept()
        await c.send_json(obs("user_transcript_final", text="x" * 40000))
        fits = await c.signalled("fits")  # as big as the board's max_message allows
        await c.send_json(obs("user_transcript_final", text="y" * fits))

    with Hostile.running("live") as srv:
        srv.scripts = [sizes]
        with device(srv, tmp_path) as (dev, rec):
            limit = max_message(dev)
            srv.signal("fits", limit - 100)  # (the JSON around the text is under 100 bytes)
            got = dev.wait_event("input_transcript_final", 15)
            s = stats(dev)
            send_text(dev, srv, "still fine?")
            dev.wait_event("turn_completed", 20)
    assert got["text"] == "y" * (limit - 100)
    assert s["drops"]["oversized"] == 1 and s["downlink_dropped"] == 1
    assert s["reconnects"] == 0 and len(srv.conns) == 1


def test_a_2_s_audio_chunk_plays_without_a_reconnect(tmp_path):
    big = pcm(2000, seed=61)

    async def one_big_chunk(c):
        await c.accept()
        f = await c.recv_text()
        await c.reply(f.text_input, audio=big, chunk_ms=2000)

    with Hostile.running("live") as srv:
        srv.scripts = [one_big_chunk]
        with device(srv, tmp_path) as (dev, rec):
            opened(dev)
            send_text(dev, srv, "say a lot at once")
            dev.wait_event("turn_completed", 20)
            dev.wait_event("reply_done", 15)
            s = stats(dev)
    assert s["reconnects"] == 0 and set(s["drops"].values()) == {0}, s["drops"]
    assert played_prefix_ms(rec, big) >= 2000 - 1


# ------------------------------------------------------------------ surrogate escapes


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_surrogate_escapes_reach_the_app_as_valid_utf8(tmp_path, runtime):
    async def escapes(c):
        await c.accept()
        await c.send(r'{"observation":"user_transcript_final","text":"parrot \ud83e\udd9c!"}')
        await c.send(r'{"observation":"command_rejected","code":{"code":"other","raw":"x"},"message":"lone \udd9c"}')

    with Hostile.running("live") as srv:
        srv.scripts = [escapes]
        with device(srv, tmp_path, runtime) as (dev, rec):
            final = dev.wait_event("input_transcript_final", 15)
            err = dev.wait_event("error", 10)
    assert final["text"] == "parrot \U0001f99c!"
    assert err["message"] == "lone \ufffd"


def test_a_rejection_code_the_app_reads_is_valid_utf8(tmp_path):
    async def odd_code(c):
        await c.accept()
        await c.send(r'{"observation":"command_rejected","code":{"code":"config_rejected","reason":{"kind":"k_\ud83e\udd9c"}},"message":"m"}')

    with Hostile.running("live") as srv:
        srv.scripts = [odd_code]
        with device(srv, tmp_path) as (dev, rec):
            err = dev.wait_event("error", 15)
    assert err["code"] == "config_rejected/k_\U0001f99c"


# ------------------------------------------------------------------ a 2.7 KB item id

LONG_ID = "item_" + "x" * 2700


def test_barge_in_on_audio_with_a_huge_item_id_keeps_the_channel(tmp_path):
    reply = pcm(4000, seed=81)

    async def long_id(c):
        await c.accept()
        f = await c.recv_text()
        await c.user_turn(f.text_input)
        rid = "resp_long"
        await c.send_json(obs("realtime_transcript", event={"type": "item_observed", "item_id": LONG_ID,
                                                            "previous_item_id": None, "role": "assistant", "response_id": rid}))
        for chunk in split(reply, 100):
            await c.send_json(live_audio(chunk, rid, LONG_ID))
        await c.rpc_call("live/interrupt", 30)
        await c.send_json(obs("turn_interrupted", response_id=rid))
        await c.send_json(obs("turn_completed", response_id=rid, stop_reason="cancelled"))

    with Hostile.running("live") as srv:
        srv.scripts = [long_id]
        with device(srv, tmp_path) as (dev, rec):
            opened(dev)
            send_text(dev, srv, "tell me a long story")
            wait_stats(dev, lambda s: s["audio_received_ms"] >= 500, 20, "reply audio")
            dev.send("interrupt")
            barge = dev.wait_event("barge_in", 10)
            send_text(dev, srv, "are you still there?")
            dev.wait_event("turn_completed", 20)  # the channel survived the barge-in
    assert barge["item_id"] == LONG_ID
    assert len(srv.rpc("live/interrupt")) == 1
    assert all(LONG_ID not in str(c.params) for c in srv.rpc("live/truncate"))
    assert dev.summary["reconnects"] == 0 and len(srv.conns) == 1
    assert absent(wav_pcm(rec), reply[3500 * 48 :])  # the reply really was cut


# ------------------------------------------------------------------ refusals and lost links


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_refused_token_gets_a_new_channel_after_closing_the_old_one(tmp_path, runtime):
    async def refuse(c):
        await c.refuse_token("token expired")  # {"error":"invalid_token",...} then Close 1008

    with Hostile.running("live") as srv:
        srv.scripts = [refuse]
        with device(srv, tmp_path, runtime) as (dev, rec):
            opened(dev)
            send_text(dev, srv, "hello")
            dev.wait_event("turn_completed", 20)
    calls = srv.rpc()
    assert _methods(srv)[:3] == ["live/open", "live/close", "live/open"]
    # The refused channel stays open on the server until the device closes it: one per session.
    assert calls[1].params["channel_id"] == _channel(calls[0]) and "result" in calls[1].answer
    assert "result" in calls[2].answer
    assert any("token expired" in line for line in dev.logs())
    assert dev.summary["reconnects"] == 1 and dev.summary["state"] == "closed"


def _mid_reply(then):
    async def script(c):
        await c.accept()
        f = await c.recv_text()
        await c.user_turn(f.text_input)
        rid, item = c.next_ids()
        await c.send_json(obs("realtime_transcript", event={"type": "item_observed", "item_id": item,
                                                            "previous_item_id": None, "role": "assistant", "response_id": rid}))
        await c.send_json(obs("assistant_transcript_delta", provider_item_id=item, content_index=0, response_id=rid, delta="Well,"))
        for chunk in split(pcm(1000, seed=71), 100):
            await c.send_json(live_audio(chunk, rid, item))
        await then(c)

    return script


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_websocket_dropped_mid_reply_gets_a_new_channel(tmp_path, runtime):
    async def drop(c):
        await c.fin()  # 0.7.0+: a terminal condition drops the socket without a word

    with Hostile.running("live") as srv:
        srv.scripts = [_mid_reply(drop)]
        with device(srv, tmp_path, runtime) as (dev, rec):
            opened(dev)
            send_text(dev, srv, "tell me something")
            dev.wait_event("reconnect", 15)
            opened(dev, n=2)
            send_text(dev, srv, "go on")
            dev.wait_event("turn_completed", 20)
    opens = [c for c in srv.rpc("live/open") if "result" in c.answer]
    assert len(opens) == 2 and _channel(opens[0]) != _channel(opens[1])
    assert dev.summary["reconnects"] == 1 and dev.summary["state"] == "closed"


def test_a_link_that_dies_silently_mid_reply_gets_a_new_channel_after_closing_the_old_one(tmp_path):
    """Found by this suite (fixed in 898b326): after a keepalive timeout the device forgot the
    admitted channel and never closed it; the server (which noticed nothing) refused every new
    live/open with "already has an active live channel": 110 attempts in 20 s, never open."""
    async def silent(c):
        await c.go_silent()  # no FIN, no pongs: only the device's keepalive can tell

    with Hostile.running("live") as srv:
        srv.scripts = [_mid_reply(silent)]
        with device(srv, tmp_path, keepalive=FAST_KEEPALIVE) as (dev, rec):
            opened(dev)
            send_text(dev, srv, "tell me something")
            dev.wait_event("reconnect", 15)
            opened(dev, n=2, timeout=20)
            send_text(dev, srv, "go on")
            dev.wait_event("turn_completed", 20)
    calls = srv.rpc()
    first = _channel(calls[0])
    closes = [i for i, c in enumerate(calls) if c.method == "live/close" and c.params["channel_id"] == first]
    opens = [i for i, c in enumerate(calls) if c.method == "live/open" and "result" in c.answer]
    assert closes and len(opens) == 2 and closes[0] < opens[1]


def test_a_bad_websocket_url_does_not_leak_the_token(tmp_path):
    """Found by this suite (fixed in 898b326): split_url's error quoted the whole URL, token
    and all, and link.py logged it."""
    def bad_port(srv, call):
        answer = srv.default_answer(call)
        tr = answer["result"]["transport"]
        tr["url"] = tr["url"].replace(f":{srv.ws_port}/", ":port/")
        return answer

    with Hostile.running("live") as srv:
        srv.answers["live/open"] = [bad_port]
        with device(srv, tmp_path) as (dev, rec):
            opened(dev)  # the next channel has a good URL
    assert any("bad port" in line for line in dev.logs())
