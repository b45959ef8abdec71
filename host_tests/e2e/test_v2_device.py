"""The device end to end: the firmware as a simulated board on the MicroPython unix port (a few
scenarios also on CPython) against the development server over loopback, in real time.

Every test waits on events with timeouts; the fake microphone and speaker run on the wall clock,
so a conversation takes as long as its audio."""

from __future__ import annotations

import json

import pytest
from harness import FIX, audio_frames, conversation, played_prefix_ms, ring_identity, stats, wait_stats, wav_pcm

QUESTION = str(FIX / "user_question.wav")  # 0.5 s silence, ~2.4 s speech, 1.6 s silence
QUESTION_END_MS = json.loads((FIX / "index.json").read_text())["user_question.wav"]["offset_ms"]
INTERRUPT = str(FIX / "user_interrupt.wav")
SHORT_REPLY = str(FIX / "user_hello.wav")  # 2.5 s: keeps turns short where length does not matter
LONG_REPLY_PCM = wav_pcm(FIX / "assistant_reply.wav")  # the server's default reply, 9.2 s
FORMAT = {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1}


def _stamped(frames):
    return all({k: f["chunk"][k] for k in FORMAT} == FORMAT for f in frames)


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    step = 4800
    while i < n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_provider_managed_turn(tmp_path, runtime):
    with conversation(tmp_path, {"reply_wav": SHORT_REPLY}, {"mic_wav": QUESTION, "echo_db": -20}, runtime) as (srv, dev, rec):
        dev.wait_event("turn_committed", 15)
        final = dev.wait_event("input_transcript_final", 10)
        assert final["text"].startswith("heard ")
        dev.wait_event("turn_completed", 20)
        dev.wait_event("reply_done", 15)  # the reply has played out; the mic is open again
        summary = dev.stop()
    frames = audio_frames(srv)
    assert frames and _stamped(frames)
    # The audio the server accepted is the microphone's WAV, sample for sample, up to the
    # moment the turn was committed (the device holds the mic from there).
    question = wav_pcm(FIX / "user_question.wav")
    assert _common_prefix(srv.input_pcm(), question) >= 48 * (QUESTION_END_MS + 300)
    assert summary["barge_ins"] == 0 and summary["frames_dropped"] == 0
    assert ring_identity(summary)
    assert played_prefix_ms(rec, wav_pcm(FIX / "user_hello.wav")) >= 2500


def test_explicit_commit_turn(tmp_path):
    with conversation(
        tmp_path, {"reply_wav": SHORT_REPLY}, {"mic_wav": QUESTION}, turning_mode="explicit_commit"
    ) as (srv, dev, rec):
        dev.wait_event("state", 10, where=lambda s: s == "open")
        assert srv.input_pcm() == b""  # the button is up: nothing leaves the microphone
        dev.send("start_talking")
        srv.wait_for(lambda: len(srv.input_pcm()) >= 48 * 3000, 15, "3 s of pushed-to-talk audio")
        dev.send("stop_talking")
        dev.wait_event("turn_committed", 10)
        dev.wait_event("turn_completed", 20)
        dev.wait_event("reply_done", 15)
        summary = dev.stop()
    kinds = [f["type"] for f in srv.client_frames()]
    commit = kinds.index("channel.commit_turn")
    assert kinds[0] == "channel.open" and "channel.input" in kinds[:commit]
    assert "channel.input" not in kinds[commit:]  # the mic closed with the commit, and stayed so
    assert "turn_started" not in [e["type"] for e in srv.events()]  # no server VAD here
    # What was captured while the button was down reached the server whole and in order: a
    # contiguous stretch of the WAV, starting where the button was pressed.
    question = wav_pcm(FIX / "user_question.wav")
    got = srv.input_pcm()
    # (anchored on speech, 1.0-1.2 s into what was sent: silence would match anywhere)
    start = question.find(got[48 * 1000 : 48 * 1200]) - 48 * 1000
    assert start >= 0, "the audio sent is not a stretch of the microphone's WAV"
    n = min(len(got), len(question) - start)
    assert n > 48 * 2500 and got[:n] == question[start : start + n]
    assert ring_identity(summary)


def test_text_turn(tmp_path):
    with conversation(tmp_path, {"reply_wav": SHORT_REPLY}) as (srv, dev, rec):
        dev.wait_event("state", 10, where=lambda s: s == "open")
        dev.send("send_text", text="What's the weather in Porto?")
        final = dev.wait_event("input_transcript_final", 10)
        assert final["text"] == "What's the weather in Porto?"
        dev.wait_event("turn_completed", 20)
        dev.wait_event("reply_done", 15)
    texts = [f["chunk"] for f in srv.client_frames(None, "channel.input") if f["chunk"]["kind"] == "text_chunk"]
    assert texts == [{"kind": "text_chunk", "text": "What's the weather in Porto?"}]
    assert played_prefix_ms(rec, wav_pcm(FIX / "user_hello.wav")) >= 2500


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_barge_in_sends_an_honest_truncate(tmp_path, runtime):
    # A short interruption ("Hello there.", then silence), so that the new turn's reply is not
    # itself talked over by the rest of a longer one.
    world = {"mic_wav": QUESTION, "echo_db": -20, "inject_wav": str(FIX / "user_hello.wav"), "inject_at_ms": 2500}
    with conversation(tmp_path, {"item_ids": True}, world, runtime) as (srv, dev, rec):  # the extension
        barge = dev.wait_event("barge_in", 30)
        truncated = dev.wait_event("assistant_transcript_truncated", 10)
        dev.wait_event("turn_committed", 20, n=2)  # the interrupting utterance is a new turn
        dev.wait_event("turn_completed", 30)  # ... and gets its reply: the channel survived
        summary = dev.stop()
        first = srv.items()[0]["item_id"]  # the first reply's assistant item
    assert barge["reason"] == "vad" and barge["item_id"] == first
    kinds = [f["type"] for f in srv.client_frames()]
    assert "channel.interrupt" in kinds
    truncates = srv.client_frames(None, "channel.barge_in_truncate")
    assert len(truncates) == 1
    t = truncates[0]
    assert (t["item_id"], t["content_index"]) == (first, 0)
    assert t["audio_played_ms"] == barge["audio_played_ms"] == truncated["audio_played_ms"]
    # Honest: never more than the user heard (the speaker recording is the ground truth),
    # and not far below it: the 100 ms safety margin plus at most two frames of error.
    heard = played_prefix_ms(rec, LONG_REPLY_PCM)
    assert t["audio_played_ms"] <= heard <= t["audio_played_ms"] + 100 + 80 + 20, (t, heard)
    # The truncate was accepted: the server never closed the channel on the device.
    closes = [f["frame"] for f in srv.sent_frames() if f["frame"].get("type") == "channel.closed"]
    assert closes == [{"type": "channel.closed", "reason": "client_closed"}], closes
    assert summary["truncates"] == [[first, t["audio_played_ms"]]]
    assert summary["late_chunks"] > 0  # in-flight audio of the first item was dropped, not played
    assert ring_identity(summary)


def test_barge_in_without_item_ids_interrupts_only(tmp_path):
    world = {"mic_wav": QUESTION, "echo_db": -20, "inject_wav": INTERRUPT, "inject_at_ms": 2000}
    with conversation(tmp_path, {"item_ids": False}, world) as (srv, dev, rec):
        barge = dev.wait_event("barge_in", 30)
        dev.wait_event("turn_committed", 20, n=2)
        dev.stop()
    assert barge["item_id"] is None and barge["audio_played_ms"] == -1
    kinds = [f["type"] for f in srv.client_frames()]
    assert "channel.interrupt" in kinds and "channel.barge_in_truncate" not in kinds
    assert played_prefix_ms(rec, LONG_REPLY_PCM) < 5000  # playback stopped at the barge-in


def test_own_echo_does_not_interrupt_the_reply(tmp_path):
    # The reply comes back into the microphone at -20 dB for all of its 9.2 s.
    with conversation(tmp_path, {}, {"mic_wav": QUESTION, "echo_db": -20}) as (srv, dev, rec):
        dev.wait_event("turn_completed", 30)
        dev.wait_event("reply_done", 20)
        summary = dev.stop()
    assert summary["barge_ins"] == 0 and dev.events("barge_in") == []
    assert "channel.interrupt" not in [f["type"] for f in srv.client_frames()]
    assert played_prefix_ms(rec, LONG_REPLY_PCM) >= len(LONG_REPLY_PCM) / 48 - 1


def test_socket_drop_mid_utterance_reconnects_and_delivers_the_rest(tmp_path):
    # The socket dies (FIN, no close frame) after 30 client frames: about 1.2 s into the
    # recording, in the middle of the question.
    server = {"reply_wav": SHORT_REPLY, "faults": _faults(drop_after_frames=30, drop_mode="close")}
    with conversation(tmp_path, server, {"mic_wav": QUESTION}) as (srv, dev, rec):
        dev.wait_event("reconnect", 15)
        dev.wait_event("turn_committed", 20)
        dev.wait_event("turn_completed", 20)
        summary = dev.stop()
    chans = sorted({f["channel"] for f in srv.frames()})
    assert len(chans) == 2 and summary["reconnects"] == 1
    # Audio of both channels together: the question, in order, contiguous but for frames that
    # were on the wire when the socket died (lost with it) and what the ring dropped.
    question = wav_pcm(FIX / "user_question.wav")
    first, second = srv.input_pcm(chans[0]), srv.input_pcm(chans[1])
    assert question.startswith(first) and len(first) >= 48 * 1000
    gap = question.find(second[: 48 * 200])
    assert gap >= len(first), "the second channel does not continue the utterance"
    lost_ms = (gap - len(first)) / 48
    assert lost_ms <= 40 * (summary["frames_dropped"] + 3), lost_ms
    assert ring_identity(summary)


def test_server_reconnect_cycle_holds_the_mic_then_resumes(tmp_path):
    with conversation(tmp_path, {"reply_wav": SHORT_REPLY}) as (srv, dev, rec):
        dev.wait_event("state", 10, where=lambda s: s == "open")
        srv.force_reconnect_cycle(succeed=True)
        dev.wait_event("status", 10, where=lambda s: s["state"] == "reconnecting")
        dev.wait_event("needs_reattach", 10)
        dev.wait_event("status", 15, where=lambda s: s["state"] == "ready", n=2)
        dev.send("send_text", text="still there?")
        dev.wait_event("turn_completed", 20)
        dev.stop()
    # The device held its input while the server was reconnecting: only frames already on the
    # wire when the status went out can meet a channel_reconnecting answer.
    errors = [f["frame"] for f in srv.sent_frames() if f["frame"].get("type") == "channel.error"]
    assert len([e for e in errors if e["code"] == "channel_reconnecting"]) <= 2, errors


def test_server_reconnect_exhaustion_gets_a_new_channel(tmp_path):
    with conversation(tmp_path, {"reply_wav": SHORT_REPLY}) as (srv, dev, rec):
        dev.wait_event("state", 10, where=lambda s: s == "open")
        srv.force_reconnect_cycle(succeed=False)
        err = dev.wait_event("error", 20, where=lambda e: e["code"] == "reconnect_exhausted")
        assert "exhausted" in err["message"]
        dev.wait_event("state", 20, where=lambda s: s == "open", n=2)  # a fresh channel
        dev.send("send_text", text="hello again")
        dev.wait_event("turn_completed", 20)
        summary = dev.stop()
    assert summary["reconnects"] >= 1 and summary["state"] == "closed"


def test_client_reconnect_exhaustion_ends_cleanly(tmp_path):
    faults = _faults(open_error="runtime_not_ready", repeat=True)
    policy = {"max_attempts": 2, "initial_backoff_ms": 20, "max_backoff_ms": 50, "max_total_ms": 0}
    with conversation(tmp_path, {"faults": faults}, reconnect=policy) as (srv, dev, rec):
        dev.wait_event("state", 20, where=lambda s: s == "error")
        summary = dev.wait_summary(10)
    assert dev.exit_reason == "error"
    assert "gave up after 2 reconnect attempts" in summary["error"]
    assert len(srv.client_frames(None, "channel.open")) == 3  # first try + 2 attempts, no storm
    assert any("runtime_not_ready" in line for line in dev.logs())


def test_expired_token_is_replaced_by_a_fresh_one(tmp_path):
    with conversation(tmp_path, {"token_ttl": 0.0, "reply_wav": SHORT_REPLY}) as (srv, dev, rec):
        srv.wait_for(lambda: srv.client_frames(None, "channel.open"), 10, "a first channel.open")
        srv.host.tokens.ttl = 60.0  # tokens minted from now on live long enough
        dev.wait_event("state", 15, where=lambda s: s == "open")
        dev.send("send_text", text="hi")
        dev.wait_event("turn_completed", 20)
        summary = dev.stop()
    assert any("open_token_expired" in line for line in dev.logs())
    opens = srv.client_frames(None, "channel.open")
    assert len(opens) >= 2 and len({o["open_token"] for o in opens}) == len(opens)  # never reused
    assert summary["reconnects"] >= 1


def test_always_expired_tokens_end_with_a_clear_error(tmp_path):
    policy = {"max_attempts": 2, "initial_backoff_ms": 20, "max_backoff_ms": 50, "max_total_ms": 0}
    with conversation(tmp_path, {"token_ttl": 0.0}, reconnect=policy) as (srv, dev, rec):
        summary = dev.wait_summary(20)
    assert summary["state"] == "error" and "gave up" in summary["error"]
    assert any("open_token_expired" in line for line in dev.logs())


def test_server_with_another_input_format_is_refused_at_open(tmp_path):
    with conversation(tmp_path, {"input_rate_hz": 16000}, {"mic_wav": QUESTION}) as (srv, dev, rec):
        summary = dev.wait_summary(20)
    assert summary["state"] == "error"
    assert "16000 Hz" in summary["error"] and "24000 Hz" in summary["error"]
    assert audio_frames(srv) == []  # not a single mismatched chunk was sent


def test_audio_format_mismatch_pauses_audio_then_tries_again(tmp_path):
    # The microphone hears silence (frames still go out); no speech to barge in with later.
    server = {"reply_wav": SHORT_REPLY, "faults": _faults(expect_input_rate_hz=16000)}
    with conversation(tmp_path, server) as (srv, dev, rec):
        err = dev.wait_event("error", 15, where=lambda e: e["code"] == "audio_format_mismatch")
        assert "16000" in err["message"]
        dev.send("send_text", text="can you hear me?")  # the channel itself is fine
        dev.wait_event("turn_completed", 20)
        # After the pause (5 s) the uplink tries again, is refused again, and pauses longer.
        dev.wait_event("error", 20, n=2, where=lambda e: e["code"] == "audio_format_mismatch")
        summary = dev.stop()
    assert "audio format" in summary["error"]
    refusals = [f["t"] for f in srv.sent_frames() if f["frame"].get("code") == "audio_format_mismatch"]
    audio = [f["t"] for f in srv.frames() if isinstance(f["frame"], dict) and f["frame"].get("type") == "channel.input"
             and f["frame"]["chunk"]["kind"] == "audio_chunk"]
    assert len(refusals) == len(audio)  # every chunk sent was refused ...
    # ... in two short bursts (the frames in flight when a refusal came back), 5 s apart
    bursts = [t for i, t in enumerate(audio) if i == 0 or t - audio[i - 1] > 2.0]
    assert len(bursts) == 2 and bursts[1] - bursts[0] >= 4.9, audio
    assert len(audio) <= 12, len(audio)


def test_bad_frames_from_the_server_are_survived(tmp_path):
    with conversation(tmp_path, {"reply_wav": SHORT_REPLY}) as (srv, dev, rec):
        dev.wait_event("state", 10, where=lambda s: s == "open")
        for kind, size in (("malformed", None), ("unknown_event", None), ("unknown_frame", None), ("binary", None), ("oversized", 8000), ("oversized", 300000)):
            srv.inject(kind, size)
        dev.send("send_text", text="are you ok?")
        dev.wait_event("turn_completed", 20)
        stats_before = stats(dev)
        # malformed and an unknown frame type, binary, two above max_message (the downlink bounds
        # what it keeps: no close for a big message, whatever its size)
        assert stats_before["drops"]["malformed"] == 2 and stats_before["drops"]["binary"] == 1
        assert stats_before["drops"]["oversized"] == 2 and stats_before["downlink_dropped"] == 5
        assert stats_before["unknown"] >= 1 and stats_before["reconnects"] == 0
        # A transport-level violation closes the socket; the device reconnects and goes on.
        srv.inject("bad_ws_frame")  # reserved opcode: close 1002
        dev.wait_event("reconnect", 15)
        dev.wait_event("state", 15, where=lambda s: s == "open", n=2)
        dev.send("send_text", text="still ok?")
        dev.wait_event("turn_completed", 20, n=2)
        summary = dev.stop()
    assert summary["state"] == "closed" and summary["reconnects"] == 1


def test_observer_plays_the_reply_and_never_sends(tmp_path):
    import websocket

    with conversation(tmp_path, {"reply_wav": SHORT_REPLY}, role="observer") as (srv, dev, rec):
        dev.wait_event("state", 10, where=lambda s: s == "open")
        info = srv.open_info()
        primary = websocket.create_connection(info["ws_url"], timeout=10)
        try:
            primary.send(json.dumps({"type": "channel.open", "protocol_version": "2", "open_token": info["open_token"],
                                     "role": "primary", "turning_mode": "provider_managed"}))
            assert json.loads(primary.recv())["type"] == "channel.opened"
            primary.send(json.dumps({"type": "channel.input", "chunk": {"kind": "text_chunk", "text": "hi"}}))
            dev.wait_event("turn_completed", 20)
            wait_stats(dev, lambda s: s["playback_chunks"] > 0, 15)  # the reply on its speaker
        finally:
            primary.close()
        summary = dev.stop()
    observer_channel = srv.client_frames(None, "channel.open")[0]
    assert observer_channel["role"] == "observer"
    obs = [f for f in srv.frames() if f["channel"] == srv.frames()[0]["channel"] and isinstance(f["frame"], dict)]
    assert {f["frame"]["type"] for f in obs} <= {"channel.open", "channel.close"}
    assert summary["audio_frames_sent"] == 0 and summary["playback_chunks"] > 0


def _faults(**fields):
    from meerkat_tools.devserver import Faults

    return Faults(**fields)


def test_non_retryable_provider_error_stops_without_retrying(tmp_path):
    faults = _faults(provider_error_at=0.5, provider_error_code="authentication_failed")
    with conversation(tmp_path, {"faults": faults}) as (srv, dev, rec):
        summary = dev.wait_summary(20)
    assert summary["state"] == "error" and "authentication_failed" in summary["error"]
    assert summary["reconnects"] == 0
    assert len(srv.client_frames(None, "channel.open")) == 1  # no retry storm


@pytest.mark.parametrize("session_id,words", [("019e0000-de00-7000-8000-000000000000", "not found"), ("no-such-session", "-32602")])
def test_unknown_session_stops_at_bootstrap(tmp_path, session_id, words):
    with conversation(tmp_path, target={"type": "session_target", "session_id": session_id}) as (srv, dev, rec):
        summary = dev.wait_summary(20)
    assert summary["state"] == "error" and words in summary["error"].lower()
    assert srv.client_frames(None, "channel.open") == [] and summary["reconnects"] == 0


def test_push_to_talk_shorter_than_100_ms_is_not_committed(tmp_path):
    with conversation(tmp_path, {"reply_wav": SHORT_REPLY}, turning_mode="explicit_commit") as (srv, dev, rec):
        dev.wait_event("state", 10, where=lambda s: s == "open")
        dev.send("start_talking")
        dev.send("stop_talking")
        err = dev.wait_event("error", 10, where=lambda e: e["code"] == "turn_too_short")
        assert "100 ms" in err["message"]
        dev.stop()
    assert srv.client_frames(None, "channel.commit_turn") == []
    assert not [f for f in srv.sent_frames() if f["frame"].get("type") == "channel.closed" and f["frame"].get("reason") != "client_closed"]


def test_a_channel_that_fails_right_after_opening_does_not_reset_the_reconnect_budget(tmp_path):
    # Every channel fails 0.2 s after channel.opened with a retryable provider error: the device
    # must still give up after max_attempts, not open new provider sessions forever.
    faults = _faults(provider_error_at=0.2, provider_error_code="invalid_request", repeat=True)
    policy = {"max_attempts": 2, "initial_backoff_ms": 20, "max_backoff_ms": 50, "max_total_ms": 0}
    with conversation(tmp_path, {"faults": faults}, reconnect=policy) as (srv, dev, rec):
        summary = dev.wait_summary(30)
    assert summary["state"] == "error" and "gave up after 2 reconnect attempts" in summary["error"]
    assert len(srv.client_frames(None, "channel.open")) == 3
