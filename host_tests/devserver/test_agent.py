"""v2: the scripted voice agent behind the fake provider: turns (reference 7.1-7.3), reply
streaming, preemption (5.3), interrupt (5.5), barge-in truncation (5.7, 9.2), and the energy VAD.
The late-interrupted and other realism sequences of the corrections are in test_realism.py."""

from __future__ import annotations

import base64
import json
import re
import wave

import pytest

from meerkat_tools.devserver.audio import DEFAULT_CHUNK_PROFILE, FIXTURE_REPLY_TEXT, chunk_plan, parse_chunk_profile
from meerkat_tools.devserver.vad import EnergyVad

from ._client import (
    Closed,
    connect,
    event_types,
    events,
    fixture_pcm,
    is_event,
    silence,
    tone,
)

REPLY_MS = 9156  # assistant_reply.wav
OPENAI_ID = re.compile(r"(item|resp)_[A-Za-z0-9]{21}")


def audio_chunks(frames: list[dict]) -> list[dict]:
    return [e for e in events(frames) if e["type"] == "output_audio_chunk"]


def truncate(ch, item_id: str, ms: int, content_index: int = 0) -> None:
    ch.send({"type": "channel.barge_in_truncate", "item_id": item_id, "content_index": content_index,
             "audio_played_ms": ms})


# -- VAD ---------------------------------------------------------------------------------------


def test_vad_finds_the_question_and_its_end():
    pcm = fixture_pcm("user_question.wav")  # 0.5 s silence, a question, 1.2 s silence
    vad = EnergyVad()
    found = vad.feed(pcm)
    assert [e.kind for e in found] == ["start", "end"]
    start_ms = found[0].sample / 24
    end_ms = found[1].sample / 24
    assert 450 <= start_ms <= 700
    assert 2500 <= end_ms <= 3400


def test_vad_is_chunking_independent_and_quiet_on_silence():
    pcm = fixture_pcm("user_hello.wav")
    whole = [(e.kind, e.sample) for e in EnergyVad().feed(pcm)]
    vad = EnergyVad()
    pieces = []
    for off in range(0, len(pcm), 1001):  # odd sizes split samples
        pieces += [(e.kind, e.sample) for e in vad.feed(pcm[off : off + 1001])]
    assert pieces == whole and len(whole) == 2
    assert EnergyVad().feed(silence(3000)) == []


def test_vad_needs_trailing_silence_to_end():
    vad = EnergyVad(silence_ms=500)
    assert [e.kind for e in vad.feed(tone(300))] == ["start"]
    assert vad.feed(silence(480)) == []
    assert [e.kind for e in vad.feed(silence(20))] == ["end"]


def test_chunk_plan_is_deterministic_and_bounded():
    bands = parse_chunk_profile("20-200")
    plan = chunk_plan(48 * REPLY_MS, bands, 7)
    assert plan == chunk_plan(48 * REPLY_MS, bands, 7)
    assert sum(length for _, length in plan) == 48 * REPLY_MS
    assert all(20 * 48 <= length <= 200 * 48 for _, length in plan[:-1])
    assert len({length for _, length in plan}) > 10  # sizes really vary


def test_default_chunk_profile_includes_long_chunks():
    bands = parse_chunk_profile(DEFAULT_CHUNK_PROFILE)
    durations = []
    for seed in range(20):
        durations += [length // 48 for _, length in chunk_plan(48 * REPLY_MS, bands, seed)[:-1]]
    assert min(durations) >= 40 and max(durations) <= 2000
    long = [d for d in durations if d >= 500]
    assert long and any(d >= 1500 for d in long)  # chunks of 0.5-2 s, not just <= 200 ms
    assert 0.2 < len(long) / len(durations) < 0.8
    with pytest.raises(ValueError):
        parse_chunk_profile("200-100")
    with pytest.raises(ValueError):
        parse_chunk_profile("10-20:0")


# -- turns -------------------------------------------------------------------------------------


def test_provider_managed_audio_turn(make_server):
    srv = make_server(item_ids=True, chunk_profile="20-200")
    ch, _ = connect(srv)
    question = fixture_pcm("user_question.wav")
    ch.stream_audio(question)
    _, frames = ch.recv_event("turn_completed")
    types = event_types(frames)
    assert types[0] == "turn_started" and types[1] == "turn_committed"
    partials = [e["text"] for e in events(frames) if e["type"] == "input_transcript_partial"]
    final = [e["text"] for e in events(frames) if e["type"] == "input_transcript_final"]
    assert len(final) == 1 and re.fullmatch(r"heard \d+\.\d s of audio", final[0])
    assert "".join(partials) == final[0] and len(partials) > 1  # deltas, not cumulative
    assert types.index("input_transcript_final") < types.index("output_text_delta")  # transcription latency 0
    assert types[-1] == "turn_completed" and types.count("turn_completed") == 1
    deltas = "".join(e["delta"] for e in events(frames) if e["type"] == "output_text_delta")
    assert deltas == FIXTURE_REPLY_TEXT
    chunks = audio_chunks(frames)
    pcm = b"".join(base64.b64decode(c["chunk"]["data"]) for c in chunks)
    assert pcm == fixture_pcm("assistant_reply.wav")
    durations = [len(base64.b64decode(c["chunk"]["data"])) // 48 for c in chunks]
    assert all(20 <= d <= 200 for d in durations[:-1]) and len(set(durations)) > 5
    item = srv.items()[0]
    for chunk in chunks:
        assert (chunk["item_id"], chunk["response_id"], chunk["content_index"]) == (
            item["item_id"], item["response_id"], 0)
        assert {k: v for k, v in chunk["chunk"].items() if k != "data"} == {
            "mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1}
    assert OPENAI_ID.fullmatch(item["item_id"]) and OPENAI_ID.fullmatch(item["response_id"])
    # Text deltas are spread over the audio, not bunched at one end.
    order = [e["type"] for e in events(frames) if e["type"] in ("output_text_delta", "output_audio_chunk")]
    middle = order[len(order) // 3 : 2 * len(order) // 3]
    assert "output_text_delta" in middle and "output_audio_chunk" in middle
    # What the provider heard is exactly what was sent.
    assert srv.input_pcm() == question
    assert item["sent_ms"] == item["total_ms"] == REPLY_MS and item["state"] == "completed"
    assert item["chunk_ms"] == durations


def test_audio_chunk_field_order_and_compact_json(make_server):
    srv = make_server(item_ids=True)
    ch, _ = connect(srv)
    ch.send_text("hi")
    ch.recv_event("turn_completed")
    item = srv.items()[0]
    raw = next(r for r in ch.raw if '"output_audio_chunk"' in r)
    assert raw.startswith(
        '{"type":"channel.event","event":{"type":"output_audio_chunk",'
        f'"item_id":"{item["item_id"]}","response_id":"{item["response_id"]}",'
        '"content_index":0,"chunk":{"mime_type":"audio/pcm","sample_rate_hz":24000,"channels":1,"data":"'
    )
    assert raw.endswith('"}}}')
    assert ": " not in raw[:200] and ", " not in raw[:200]


def test_item_ids_are_off_by_default_like_v0_6_2(srv):
    ch, _ = connect(srv)
    ch.send_text("hi")
    _, frames = ch.recv_event("turn_completed")
    chunks = audio_chunks(frames)
    assert chunks
    for chunk in chunks:
        assert list(chunk) == ["type", "chunk"]
        assert list(chunk["chunk"]) == ["mime_type", "sample_rate_hz", "channels", "data"]
    assert not any("item_" in raw for raw in ch.raw)  # no provider id anywhere on the wire


def test_item_ids_are_per_reply(make_server):
    srv = make_server(item_ids=True)
    ch, _ = connect(srv)
    seen = []
    for n in (1, 2):
        ch.send_text(f"turn {n}")
        _, frames = ch.recv_event("turn_completed")
        ids = {(c["item_id"], c["response_id"]) for c in audio_chunks(frames)}
        assert len(ids) == 1
        seen.append(ids.pop())
    assert seen[0] != seen[1]
    assert [(i["item_id"], i["response_id"]) for i in srv.items()] == seen


def test_short_id_style(make_server):
    srv = make_server(item_ids=True, id_style="short")
    ch, _ = connect(srv)
    ch.send_text("hi")
    _, frames = ch.recv_event("turn_completed")
    chunk = audio_chunks(frames)[0]
    assert re.fullmatch(r"item_\d+", chunk["item_id"]) and re.fullmatch(r"resp_\d+", chunk["response_id"])


def test_explicit_commit_turn(srv):
    ch, _ = connect(srv, mode="explicit_commit")
    ch.stream_audio(fixture_pcm("user_hello.wav"))
    assert ch.sentinel() == []  # no VAD events in explicit_commit
    ch.send({"type": "channel.commit_turn"})
    _, frames = ch.recv_event("turn_completed")
    types = event_types(frames)
    assert "turn_started" not in types
    assert types[0] == "turn_committed"
    final = [e["text"] for e in events(frames) if e["type"] == "input_transcript_final"]
    assert final == ["heard 2.5 s of audio"]


def test_explicit_commit_text_turn_has_no_turn_committed_or_transcripts(srv):
    """Corrections 2: commit only sends response.create; the synthetic turn events are for
    provider_managed only."""
    ch, _ = connect(srv, mode="explicit_commit")
    ch.send_text("typed question")
    assert ch.sentinel() == []
    ch.send({"type": "channel.commit_turn"})
    _, frames = ch.recv_event("turn_completed")
    types = event_types(frames)
    for absent in ("turn_started", "turn_committed", "input_transcript_partial", "input_transcript_final"):
        assert absent not in types
    assert set(types[:-1]) == {"output_text_delta", "output_audio_chunk"}


def test_commit_without_staged_input_is_a_recoverable_error(srv):
    ch, _ = connect(srv, mode="explicit_commit")
    ch.send({"type": "channel.commit_turn"})
    assert ch.recv() == {
        "type": "channel.error",
        "code": "invalid_request",
        "message": "realtime commit_turn failed: realtime commit_turn requires staged input",
    }
    ch.send_audio(silence(100))
    ch.send({"type": "channel.commit_turn"})
    ch.recv_event("turn_completed")
    # After a commit the buffer is empty again.
    ch.send({"type": "channel.commit_turn"})
    assert ch.recv()["code"] == "invalid_request"


def test_commit_with_less_than_100ms_kills_the_channel(srv):
    ch, _ = connect(srv, mode="explicit_commit")
    ch.send_audio(silence(40))
    ch.send({"type": "channel.commit_turn"})
    error = ch.recv()
    assert error["code"] == "invalid_request"
    assert error["message"] == (
        "realtime event_pump failed: Error committing input audio buffer: buffer too small. "
        "Expected at least 100ms of audio, but buffer only has 40.00ms of audio."
    )
    assert ch.recv() == {"type": "channel.closed", "reason": "invalid_request"}
    assert ch.expect_end() is None


# -- preemption and interrupt -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["audio", "text"])
def test_any_input_after_output_started_preempts(make_server, kind):
    srv = make_server(paced=True)
    ch, _ = connect(srv)
    ch.send_text("first question")
    ch.recv_event("output_audio_chunk")
    srv.options.reply_speed = 0.0  # the next reply comes unpaced (this one is scheduled already)
    if kind == "audio":
        ch.send_audio(silence(40))  # even silence: the rule looks at no content
    else:
        ch.send_text("second question")
    _, frames = ch.recv_event("interrupted")
    types = event_types(frames)
    assert "turn_completed" not in types
    if kind == "text":
        # The typed turn's synthetic events go out at once; `interrupted` only when the
        # provider's response.done(cancelled) arrives, after them (corrections 1).
        assert types[:4] == ["turn_started", "input_transcript_partial", "input_transcript_final", "turn_committed"]
        # The new input starts the next turn, which completes normally.
        _, frames = ch.recv_event("turn_completed")
        assert "interrupted" not in event_types(frames)
        assert srv.items()[1]["state"] == "completed"
    else:
        assert ch.sentinel() == []  # no turn_completed for the cancelled response
        assert srv.input_pcm() == silence(40)
    items = srv.items()
    assert items[0]["state"] == "interrupted" and items[0]["sent_ms"] < REPLY_MS


def test_input_before_output_started_is_staged_not_preemptive(make_server):
    srv = make_server(reply_latency_ms=500, reply_speed=0.0)
    ch, _ = connect(srv)
    ch.send_text("question")
    ch.recv_event("turn_committed")
    ch.send_audio(silence(40))  # arrives while the response has no output yet
    _, frames = ch.recv_event("turn_completed")
    assert "interrupted" not in event_types(frames)


def test_barge_in_with_speech_interrupts_then_starts_a_turn(make_server):
    srv = make_server(paced=True)
    ch, _ = connect(srv)
    ch.send_text("tell me about Lisbon")
    ch.recv_event("output_audio_chunk")
    ch.stream_audio(fixture_pcm("user_interrupt.wav"))
    _, frames = ch.recv_event("turn_committed")
    types = event_types(frames)
    assert types.index("interrupted") < types.index("turn_started") < types.index("turn_committed")
    assert "turn_completed" not in types


def test_interrupt_cancels_without_turn_completed(make_server):
    srv = make_server(paced=True)
    ch, _ = connect(srv)
    ch.send_text("long answer please")
    ch.recv_event("output_audio_chunk")
    ch.send({"type": "channel.interrupt"})
    _, frames = ch.recv_event("interrupted")
    assert ch.sentinel() == []  # the reply stopped before `interrupted` was sent
    assert "turn_completed" not in event_types(frames)
    ch.send({"type": "channel.interrupt"})  # idle now: a silent no-op
    assert ch.sentinel() == []


def test_interrupt_when_idle_is_silent(srv):
    ch, _ = connect(srv)
    ch.send({"type": "channel.interrupt"})
    ch.send({"type": "channel.interrupt"})
    assert ch.sentinel() == []


# -- truncation ---------------------------------------------------------------------------------


def test_truncate_within_generated_audio(make_server):
    srv = make_server(paced=True)
    ch, _ = connect(srv)
    ch.send_text("question")
    ch.recv_event("output_audio_chunk")
    srv.options.reply_speed = 0.0  # for the next reply
    ch.send({"type": "channel.interrupt"})
    ch.recv_event("interrupted")
    item = srv.items()[0]
    played = min(item["sent_ms"], 150)
    truncate(ch, item["item_id"], played)
    event, _ = ch.recv_event("assistant_transcript_truncated")
    # The whole transcript accumulated for the item (its transcript never finished), not a
    # cut in proportion to the audio (corrections 4).
    assert event == {"type": "assistant_transcript_truncated", "item_id": item["item_id"], "audio_played_ms": played,
                     "truncated_text": item["text_sent"]}
    assert list(event) == ["type", "item_id", "audio_played_ms", "truncated_text"]
    assert item["text_sent"] and FIXTURE_REPLY_TEXT.startswith(item["text_sent"])
    # The channel lives on.
    ch.send_text("next")
    ch.recv_event("turn_completed")


def test_truncate_of_a_completed_item_has_no_text(srv):
    ch, _ = connect(srv)
    ch.send_text("question")
    ch.recv_event("turn_completed")
    item_id = srv.items()[0]["item_id"]
    truncate(ch, item_id, 4578)
    event, _ = ch.recv_event("assistant_transcript_truncated")
    assert event == {"type": "assistant_transcript_truncated", "item_id": item_id, "audio_played_ms": 4578}


def fatal(ch, message: str) -> None:
    error = ch.recv()
    assert error == {"type": "channel.error", "code": "invalid_request", "message": message}
    assert ch.recv() == {"type": "channel.closed", "reason": "invalid_request"}
    assert ch.expect_end() is None  # dropped without a Close frame


def test_truncate_overshoot_kills_the_channel(srv):
    ch, _ = connect(srv)
    ch.send_text("question")
    ch.recv_event("turn_completed")
    truncate(ch, srv.items()[0]["item_id"], REPLY_MS + 1)
    fatal(ch, f"realtime event_pump failed: Audio content of {REPLY_MS}ms is already shorter than {REPLY_MS + 1}ms")
    srv.wait_channel_ended(1)
    assert srv.channels()[0]["end_reason"] == "invalid_request"


def test_truncate_beyond_audio_generated_so_far(make_server):
    srv = make_server(paced=True)
    ch, _ = connect(srv)
    ch.send_text("question")
    ch.recv_event("output_audio_chunk")
    ch.send({"type": "channel.interrupt"})
    ch.recv_event("interrupted")
    item = srv.items()[0]
    sent = item["sent_ms"]
    truncate(ch, item["item_id"], sent + 40)
    fatal(ch, f"realtime event_pump failed: Audio content of {sent}ms is already shorter than {sent + 40}ms")


def test_truncate_unknown_item_kills_the_channel(srv):
    ch, _ = connect(srv)
    truncate(ch, "item_99", 100)
    fatal(ch, "realtime event_pump failed: Audio content of 0ms is already shorter than 100ms")


def test_second_larger_truncate_overshoots_the_shortened_item(srv):
    ch, _ = connect(srv)
    ch.send_text("question")
    ch.recv_event("turn_completed")
    item_id = srv.items()[0]["item_id"]
    truncate(ch, item_id, 1000)
    ch.recv_event("assistant_transcript_truncated")
    truncate(ch, item_id, 800)  # smaller: fine
    ch.recv_event("assistant_transcript_truncated")
    truncate(ch, item_id, 900)
    fatal(ch, "realtime event_pump failed: Audio content of 800ms is already shorter than 900ms")


# -- pace and reply audio ----------------------------------------------------------------------


def test_reply_is_paced_faster_than_real_time(make_server):
    srv = make_server(reply_speed=8.0, reply_head_start_ms=500)
    ch, _ = connect(srv)
    ch.send_text("question")
    ch.recv_event("turn_completed", timeout=20)
    sent = [e for e in srv.sent_frames() if e["kind"] == "text" and is_event(e["frame"], "output_audio_chunk")]
    t0 = sent[0]["t"]
    before = 0
    for entry in sent:
        # Never ahead of the pace: audio generated before it < (elapsed + timer slack) * speed
        # + head start.
        assert before <= ((entry["t"] - t0) * 1000 + 10) * 8.0 + 500
        before += len(base64.b64decode(entry["frame"]["event"]["chunk"]["data"])) // 48
    last_chunk = srv.items()[0]["chunk_ms"][-1]
    assert sent[-1]["t"] - t0 >= (REPLY_MS - last_chunk - 500 - 100) / 8.0 / 1000


def test_reply_wav_option(make_server, tmp_path):
    path = tmp_path / "reply.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(24000)
        wav.writeframes(tone(500))
    srv = make_server(reply_wav=path, reply_text="beep")
    ch, _ = connect(srv)
    ch.send_text("x")
    _, frames = ch.recv_event("turn_completed")
    assert b"".join(base64.b64decode(c["chunk"]["data"]) for c in audio_chunks(frames)) == tone(500)
    assert [e["delta"] for e in events(frames) if e["type"] == "output_text_delta"] == ["beep"]


def test_reply_wav_in_another_format_is_refused(make_server, tmp_path):
    path = tmp_path / "reply16k.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\x00\x00" * 1600)
    with pytest.raises(ValueError, match="24000 Hz, mono, 16-bit"):
        make_server(reply_wav=path)


def test_generated_reply_when_no_fixture(monkeypatch, make_server, tmp_path):
    from meerkat_tools.devserver import audio

    monkeypatch.setattr(audio, "DEFAULT_REPLY_WAV", tmp_path / "missing.wav")
    srv = make_server()
    ch, _ = connect(srv)
    ch.send_text("x")
    _, frames = ch.recv_event("turn_completed")
    pcm = b"".join(base64.b64decode(c["chunk"]["data"]) for c in audio_chunks(frames))
    assert len(pcm) == 3 * 48000 and EnergyVad().feed(pcm)  # 3 s, and it sounds like speech
    assert json.dumps(srv.items()[0]["text"])


def test_speech_onset_cancels_a_response_without_output_yet(make_server):
    """Server VAD cancels the pending response (interrupt_response), but the adapter saw no
    output, so speech_started is only turn_started. Streamed faster than real time, the user
    turn commits before the provider's response.done(cancelled) arrives; the adapter is then
    awaiting the new response and drops that late done (live.rs@v0.6.2 L1466-1483): neither
    `interrupted` nor `turn_completed` is ever sent for the cancelled response."""
    srv = make_server(reply_latency_ms=500, reply_speed=0.0)
    ch, _ = connect(srv)
    ch.send_text("question")
    ch.recv_event("turn_committed")
    ch.stream_audio(fixture_pcm("user_hello.wav"))
    _, frames = ch.recv_event("turn_committed")
    assert event_types(frames) == ["turn_started", "turn_committed"]
    _, frames = ch.recv_event("turn_completed")
    types = event_types(frames)
    assert "interrupted" not in types and types.count("turn_completed") == 1
    items = srv.items()
    assert len(items) == 1 and items[0]["state"] == "completed"  # the first reply never output audio
