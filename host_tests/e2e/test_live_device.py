"""The device end to end on the live surface (Meerkat 0.6.5 and later): the firmware as a
simulated board (the frozen32 image at 110K by default; a few scenarios on CPython) against the
development server's live surface (JSON-RPC live/*, the /live/ws WebSocket with binary PCM in,
observations out), in real time. The device's config keeps its default server.surface "auto":
it finds the live surface by asking for it.

Every test waits on events with timeouts; the fake microphone and speaker run on the wall clock,
so a conversation takes as long as its audio."""

from __future__ import annotations

import json

import pytest
from harness import FIX, conversation, played_prefix_ms, ring_identity, wait_stats, wav_pcm

QUESTION = str(FIX / "user_question.wav")  # 0.5 s silence, ~2.4 s speech, 1.6 s silence
QUESTION_END_MS = json.loads((FIX / "index.json").read_text())["user_question.wav"]["offset_ms"]
SHORT_REPLY = str(FIX / "user_hello.wav")  # 2.5 s
LONG_REPLY_PCM = wav_pcm(FIX / "assistant_reply.wav")  # the server's default reply, 9.2 s
HELLO = str(FIX / "user_hello.wav")


def live(tmp_path, server=None, world=None, runtime="micropython", **config):
    return conversation(tmp_path, server, world, runtime, surface="live", **config)


def _reply_done(dev, n, timeout=30):
    return dev.wait_event("reply_done", timeout, n=n)


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i : i + 4800] == b[i : i + 4800]:
        i += 4800
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _results(srv, method):
    return [c["response"].get("result") for c in srv.rpc_calls(method)]


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_spoken_turn_streams_binary_pcm(tmp_path, runtime):
    with live(tmp_path, {"reply_wav": SHORT_REPLY}, {"mic_wav": QUESTION, "echo_db": -20}, runtime) as (srv, dev, rec):
        final = dev.wait_event("input_transcript_final", 20)
        assert final["text"].startswith("heard ")
        dev.wait_event("turn_completed", 20)
        dev.wait_event("reply_done", 15)
        summary = dev.stop()
    assert summary["surface"] == "live" and summary["reconnects"] == 0
    # The microphone went out as binary frames only (no JSON audio chunks), and the server got
    # the WAV sample for sample up to the end of the question.
    kinds = {f["kind"] for f in srv.frames()}
    assert "binary" in kinds and not srv.client_frames(None, "audio")
    question = wav_pcm(FIX / "user_question.wav")
    assert _common_prefix(srv.input_pcm(), question) >= 48 * (QUESTION_END_MS + 300)
    methods = [c["method"] for c in srv.rpc_calls()]
    assert methods[0] == "live/open" and "realtime/open_info" not in methods  # auto: the probe is the open
    assert summary["barge_ins"] == 0 and summary["frames_dropped"] == 0 and ring_identity(summary)
    assert played_prefix_ms(rec, wav_pcm(FIX / "user_hello.wav")) >= 2500


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_barge_in_truncates_with_the_heard_cursor_and_the_server_accepts_it(tmp_path, runtime):
    world = {"mic_wav": QUESTION, "echo_db": -20, "inject_wav": HELLO, "inject_at_ms": 2500}
    with live(tmp_path, {}, world, runtime) as (srv, dev, rec):
        barge = dev.wait_event("barge_in", 30)
        truncated = dev.wait_event("assistant_transcript_truncated", 10)
        dev.wait_event("input_transcript_final", 20, n=2)  # the interruption is a new turn
        dev.wait_event("turn_completed", 40)  # ... and gets its reply: the channel survived
        summary = dev.stop()
    assert barge["reason"] == "vad"
    (interrupt,) = srv.rpc_calls("live/interrupt")
    (trunc,) = srv.rpc_calls("live/truncate")
    params = trunc["request"]["params"]
    assert params["item_id"] == barge["item_id"] and params["content_index"] == 0
    assert trunc["t"] - interrupt["t"] < 1.0  # both left at the barge-in, back to back
    assert params["audio_played_ms"] == barge["audio_played_ms"] == truncated["audio_played_ms"]
    assert trunc["response"]["result"] == {"status": "truncated"}
    # Honest: never more than the user heard (the speaker recording is the ground truth), and
    # not far below it: the 100 ms margin plus at most a few frames of modelling error.
    heard = played_prefix_ms(rec, LONG_REPLY_PCM)
    assert params["audio_played_ms"] <= heard <= params["audio_played_ms"] + 100 + 80 + 20, (params, heard)
    assert summary["reconnects"] == 0 and len(srv.rpc_calls("live/open")) == 1
    assert summary["truncates"] == [[barge["item_id"], params["audio_played_ms"]]]
    assert ring_identity(summary)


def test_typed_turn_goes_as_a_text_frame(tmp_path):
    with live(tmp_path, {"reply_wav": SHORT_REPLY}) as (srv, dev, rec):
        dev.wait_event("state", 15, where=lambda s: s == "open")
        dev.send("send_text", text="What's the weather in Porto?")
        final = dev.wait_event("input_transcript_final", 15)
        assert final["text"] == "What's the weather in Porto?"
        dev.wait_event("turn_completed", 20)
        dev.wait_event("reply_done", 15)
    assert srv.client_frames(None, "text") == [{"kind": "text", "text": "What's the weather in Porto?"}]
    assert played_prefix_ms(rec, wav_pcm(FIX / "user_hello.wav")) >= 2500


def test_push_to_talk_commits_with_live_commit_input(tmp_path):
    with live(tmp_path, {"reply_wav": SHORT_REPLY}, {"mic_wav": QUESTION}, turning_mode="explicit_commit") as (srv, dev, rec):
        dev.wait_event("state", 15, where=lambda s: s == "open")
        assert srv.input_pcm() == b""  # the button is up: nothing leaves the microphone
        dev.send("start_talking")
        srv.wait_for(lambda: len(srv.input_pcm()) >= 48 * 3000, 15, "3 s of pushed-to-talk audio")
        dev.send("stop_talking")
        dev.wait_event("turn_completed", 20)
        dev.wait_event("reply_done", 15)
        summary = dev.stop()
    (commit,) = srv.rpc_calls("live/commit_input")
    assert commit["response"]["result"] == {"status": "committed"}
    # Nothing after the commit: the microphone closed with it.
    audio_after = [f for f in srv.frames() if f["kind"] == "binary" and f["t"] > commit["t"]]
    assert audio_after == [] and summary["reconnects"] == 0 and ring_identity(summary)


def test_websocket_drop_mid_utterance_gets_a_new_channel(tmp_path):
    from meerkat_tools.devserver import Faults

    server = {"reply_wav": SHORT_REPLY, "faults": Faults(drop_after_frames=30, drop_mode="close")}
    with live(tmp_path, server, {"mic_wav": QUESTION}) as (srv, dev, rec):
        dev.wait_event("reconnect", 15)
        dev.wait_event("turn_completed", 30)
        summary = dev.stop()
    opens = srv.rpc_calls("live/open")
    assert len(opens) == 2 and summary["reconnects"] == 1  # no reattach: a new channel
    first, second = (o["response"]["result"]["channel_id"] for o in opens)
    assert first != second
    # The utterance continues on the new channel (what was on the wire when the socket died is
    # lost with it; the ring dropped nothing it did not count).
    question = wav_pcm(FIX / "user_question.wav")
    a, b = srv.input_pcm(first), srv.input_pcm(second)
    assert question.startswith(a) and len(a) >= 48 * 1000
    gap = question.find(b[: 48 * 200])
    assert gap >= len(a), "the second channel does not continue the utterance"
    assert (gap - len(a)) / 48 <= 40 * (summary["frames_dropped"] + 3)
    assert ring_identity(summary)


def test_a_refused_token_closes_the_old_channel_and_opens_a_new_one(tmp_path):
    from meerkat_tools.devserver import Faults

    with live(tmp_path, {"reply_wav": SHORT_REPLY, "faults": Faults(token_fault="expire")}) as (srv, dev, rec):
        dev.wait_event("state", 20, where=lambda s: s == "open")
        dev.send("send_text", text="hi")
        dev.wait_event("turn_completed", 20)
        summary = dev.stop()
    assert any("refused the token" in line and "expired" in line for line in dev.logs())
    opens = srv.rpc_calls("live/open")
    closes = srv.rpc_calls("live/close")
    assert len(opens) >= 2 and summary["reconnects"] >= 1
    refused = opens[0]["response"]["result"]["channel_id"]
    # The refused token left its channel open on the server: the device closed it first.
    assert closes and closes[0]["request"]["params"]["channel_id"] == refused and closes[0]["t"] < opens[1]["t"]
    tokens = [o["response"]["result"]["transport"]["token"] for o in opens]
    assert len(set(tokens)) == len(tokens)
    assert not any(t in line for t in tokens for line in dev.logs())  # never logged


def test_no_truncate_for_a_reply_that_finished_playing(tmp_path):
    # The user speaks only after the whole reply played: nothing to cut, nothing sent.
    world = {"mic_wav": QUESTION, "echo_db": -20, "inject_wav": HELLO, "inject_at_ms": 4000}
    with live(tmp_path, {"reply_wav": SHORT_REPLY}, world) as (srv, dev, rec):
        dev.wait_event("reply_done", 30)
        dev.wait_event("input_transcript_final", 20, n=2)
        dev.wait_event("turn_completed", 20, n=2)
        summary = dev.stop()
    assert srv.rpc_calls("live/truncate") == [] and summary["barge_ins"] == 0
    assert summary["reconnects"] == 0


def test_malformed_and_oversized_observations_are_survived(tmp_path):
    with live(tmp_path, {"reply_wav": SHORT_REPLY}) as (srv, dev, rec):
        dev.wait_event("state", 15, where=lambda s: s == "open")
        for kind, size in (("malformed", None), ("unknown_observation", None), ("unknown", None), ("binary", None), ("oversized", 20000)):
            srv.inject(kind, size)
        dev.send("send_text", text="are you ok?")
        dev.wait_event("turn_completed", 20)
        _reply_done(dev, 1)
        # One ~2 s assistant_audio_chunk message (about 270 KB), inside the next reply (it
        # carries that reply's ids): it streams through the 240 ms ring, no reconnect.
        dev.send("send_text", text="still ok?")
        wait_stats(dev, lambda s: s["audio_received_ms"] > 2600, 20)
        srv.inject("oversized_audio", 270000)
        dev.wait_event("turn_completed", 20, n=2)
        _reply_done(dev, 2)
        summary = dev.stop()
    drops = summary["drops"]
    assert drops["malformed"] == 1 and drops["binary"] == 1 and drops["oversized"] == 1, drops
    assert summary["reconnects"] == 0 and summary["state"] == "closed" and summary["barge_ins"] == 0
    assert summary["audio_received_ms"] >= 2 * 2500 + 2000  # the big chunk was played too


def test_a_mob_member_is_opened_with_mob_member_live_open(tmp_path):
    server = {"reply_wav": SHORT_REPLY, "mob_member": "crew/navigator"}
    target = {"type": "mob_member", "mob_id": "crew", "agent_identity": "navigator"}
    with live(tmp_path, server, target=target) as (srv, dev, rec):
        dev.wait_event("state", 15, where=lambda s: s == "open")
        dev.send("send_text", text="status?")
        dev.wait_event("turn_completed", 20)
        dev.send("interrupt")
        srv.wait_for(lambda: srv.rpc_calls("mob/member_live_control"), 10, "the interrupt")
        dev.stop()
    assert srv.rpc_calls("mob/member_live_open") and not srv.rpc_calls("live/open")
    verbs = [c["request"]["params"]["verb"] for c in srv.rpc_calls("mob/member_live_control")]
    assert {"verb": "interrupt"} in verbs
    assert srv.rpc_calls("mob/member_live_close")  # close() released the member's channel


def test_a_device_pinned_to_v2_says_clearly_that_the_server_speaks_live(tmp_path):
    with live(tmp_path, {}, device_surface="v2") as (srv, dev, rec):
        summary = dev.wait_summary(20)
    assert summary["state"] == "error" and "live" in summary["error"] and "realtime/open_info" in summary["error"]
    assert summary["reconnects"] == 0
