"""Live observations and turn sequences (meerkat-live.md 4, 5.3; checklist section 11): shapes
of every observation, spoken and typed turns, explicit_commit, barge-in by server VAD,
live/interrupt, live/truncate, the terminal traps, tools, and the lossy audio lane."""

from __future__ import annotations

import base64
import re

import pytest

from meerkat_tools.devserver.live_adapter import LiveAdapter

from ._client import fixture_pcm, silence
from ._live_client import LiveSocket, connect, error, names, of, result

REPLY_MS = 9156
REPLY_TEXT = ("It is sunny in Lisbon today, with a high of twenty four degrees and a light breeze "
              "from the Atlantic. The evening will be clear and mild.")
ITEM = re.compile(r"item_[A-Za-z0-9]{21}")
RESP = re.compile(r"resp_[A-Za-z0-9]{21}")


def until_completed(sock: LiveSocket, stop_reason: str = "end_turn", timeout: float = 15.0) -> list[dict]:
    return sock.recv_until(lambda f: f.get("observation") == "turn_completed" and f["stop_reason"] == stop_reason,
                           timeout)


def drain_audio(sock: LiveSocket, frames: list[dict], item_id: str, total_ms: int) -> list[dict]:
    """The lossy lane may trail turn_completed: read audio of the item until all of it came."""
    chunks = [f for f in of(frames, "assistant_audio_chunk") if f["item_id"] == item_id]
    while sum(len(base64.b64decode(c["data"])) for c in chunks) < total_ms * 48:
        frame = sock.recv()
        if frame.get("observation") == "assistant_audio_chunk" and frame["item_id"] == item_id:
            chunks.append(frame)
    return chunks


def test_spoken_turn(live):
    sock, opened = connect(live)
    question = fixture_pcm("user_question.wav")
    sock.stream_pcm(question)
    frames = until_completed(sock)
    obs = names(frames)
    # Speech start, commit and each input-transcript delta: indistinguishable status_changed.
    assert obs[0] == "status_changed" and frames[0] == {"observation": "status_changed", "status": {"status": "ready"}}
    final = of(frames, "user_transcript_final")
    assert len(final) == 1
    user = final[0]
    assert list(user) == ["observation", "provider_item_id", "content_index", "text"] or \
        list(user) == ["observation", "provider_item_id", "previous_item_id", "content_index", "text"]
    assert ITEM.fullmatch(user["provider_item_id"]) and user["content_index"] == 0
    assert re.fullmatch(r"heard \d+\.\d s of audio", user["text"])
    words = len(user["text"].split(" "))
    assert obs.count("status_changed") == 2 + words  # speech, commit, one per transcript delta
    item = live.items()[0]
    deltas = of(frames, "assistant_transcript_delta")
    assert "".join(d["delta"] for d in deltas) == REPLY_TEXT
    for d in deltas:
        assert list(d) == ["observation", "provider_item_id", "previous_item_id", "content_index", "response_id",
                           "delta_id", "delta"]
        assert (d["provider_item_id"], d["content_index"], d["response_id"]) == (item["item_id"], 0, item["response_id"])
        assert d["previous_item_id"] == user["provider_item_id"]
    transcript_final = of(frames, "assistant_transcript_final")[0]
    assert transcript_final == {
        "observation": "assistant_transcript_final", "provider_item_id": item["item_id"],
        "previous_item_id": user["provider_item_id"], "content_index": 0, "response_id": item["response_id"],
        "text": REPLY_TEXT, "stop_reason": "end_turn", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}
    done = frames[-1]
    assert list(done) == ["observation", "response_id", "stop_reason", "usage"]
    assert done["response_id"] == item["response_id"] and RESP.fullmatch(done["response_id"])
    usage = done["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert usage["accounting"] == {"provider": "openai", "model": "gpt-realtime-2", "presented_tokens": usage["input_tokens"],
                                   "convention": "open_ai_input_includes_cached_subset",
                                   "aggregation": "provider_inclusive_input_total"}
    chunks = drain_audio(sock, frames, item["item_id"], REPLY_MS)
    assert b"".join(base64.b64decode(c["data"]) for c in chunks) == fixture_pcm("assistant_reply.wav")
    for c in chunks:
        assert list(c) == ["observation", "data", "sample_rate_hz", "channels", "response_id", "item_id", "content_index"]
        assert (c["sample_rate_hz"], c["channels"], c["response_id"], c["content_index"]) == (24000, 1, item["response_id"], 0)
    # Conversation items: the user's (response_id null) and the assistant's.
    observed = [f["event"] for f in of(frames, "realtime_transcript")]
    assert {"type": "item_observed", "item_id": user["provider_item_id"], "previous_item_id": None, "role": "user",
            "response_id": None} in observed
    assert any(e["role"] == "assistant" and e["response_id"] == item["response_id"] for e in observed)
    assert all(list(e) == ["type", "item_id", "previous_item_id", "role", "response_id"] for e in observed)
    assert live.input_pcm(opened["channel_id"]) == question
    assert all(op in (1, 10) for op in sock.opcodes)  # text frames only, never a server ping


def test_typed_turn(live):
    sock, _ = connect(live)
    sock.send_text("what is the weather")
    frames = until_completed(sock)
    assert names(frames)[:4] == ["status_changed", "status_changed", "user_transcript_final", "status_changed"]
    final = frames[2]
    assert re.fullmatch(r"mk_text_[0-9a-f]{24}", final["provider_item_id"])  # Meerkat's synthetic item id
    assert final["text"] == "what is the weather" and final["content_index"] == 0


def test_explicit_commit_audio_turn(live):
    sock, opened = connect(live, "explicit_commit")
    hello = fixture_pcm("user_hello.wav")
    sock.stream_pcm(hello)
    # The WebSocket and JSON-RPC are separate connections: commit once the audio is staged.
    live.wait_for(lambda: live.input_pcm(opened["channel_id"]) == hello)
    assert result(live, "live/commit_input", {"channel_id": opened["channel_id"]}) == {"status": "committed"}
    frames = until_completed(sock)
    assert of(frames, "user_transcript_final")[0]["text"] == "heard 2.5 s of audio"
    assert "turn_interrupted" not in names(frames)


@pytest.mark.parametrize("mode, staged", [("provider_managed", "audio"), ("explicit_commit", None),
                                          ("explicit_commit", "short")])
def test_commit_input_terminal_traps(live, mode, staged):
    """Answered `committed`, then the channel ends: socket dropped, nothing published."""
    sock, opened = connect(live, mode)
    cid = opened["channel_id"]
    if staged is not None:
        pcm = silence(200 if staged == "audio" else 40)  # 40 ms: under OpenAI's 100 ms minimum
        sock.send_pcm(pcm)
        live.wait_for(lambda: live.input_pcm(cid) == pcm)
    assert result(live, "live/commit_input", {"channel_id": cid}) == {"status": "committed"}
    close, frames = sock.expect_end()
    assert close is None and not [f for f in frames if f.get("observation") in ("error", "turn_completed")]
    live.wait_channel_ended(cid)
    assert result(live, "live/status", {"channel_id": cid})["status"] == {"status": "closed"}


def test_text_response_modality(live):
    sock, opened = connect(live, "explicit_commit")
    sock.send_text("answer in text")
    result(live, "live/commit_input", {"channel_id": opened["channel_id"], "response_modality": {"modality": "text"}})
    frames = until_completed(sock)
    text = "".join(f["delta"] for f in of(frames, "assistant_text_delta"))
    assert text == REPLY_TEXT
    assert not of(frames, "assistant_audio_chunk") and not of(frames, "assistant_transcript_delta")


def test_barge_in_by_server_vad(make_server):
    srv = make_server(surface="live", paced=True)
    sock, _ = connect(srv)
    sock.send_text("tell me about Lisbon")
    first, _ = sock.recv_obs("assistant_audio_chunk")
    srv.options.reply_speed = 0  # the next reply comes unpaced (this one is scheduled already)
    sock.stream_pcm(fixture_pcm("user_interrupt.wav"))
    interrupted, frames = sock.recv_obs("turn_interrupted")
    assert interrupted == {"observation": "turn_interrupted", "response_id": first["response_id"]}
    after = sock.recv_until(lambda f: f.get("observation") == "turn_completed")
    assert after[0] == {"observation": "status_changed", "status": {"status": "ready"}}  # TurnStarted behind it
    cancelled = after[-1]
    assert (cancelled["response_id"], cancelled["stop_reason"]) == (first["response_id"], "cancelled")
    # Audio of the cancelled response may still arrive after turn_interrupted; nothing of it
    # after its turn_completed.
    frames = until_completed(sock)
    assert all(f.get("response_id") != first["response_id"] for f in frames if "response_id" in f)
    assert "turn_interrupted" not in names(frames)
    assert srv.items()[0]["state"] == "interrupted"


def test_speech_after_generation_finished_is_no_interrupt(live):
    sock, _ = connect(live)
    sock.send_text("short answer")
    until_completed(sock)  # generated (faster than real time); a device would still be playing
    sock.stream_pcm(fixture_pcm("user_hello.wav"))
    frames = until_completed(sock)
    assert "turn_interrupted" not in names(frames)


def test_live_interrupt(make_server):
    srv = make_server(surface="live", paced=True)
    sock, opened = connect(srv)
    cid = opened["channel_id"]
    assert result(srv, "live/interrupt", {"channel_id": cid}) == {"status": "interrupted"}  # nothing active
    sock.send_text("talk to me")
    chunk, _ = sock.recv_obs("assistant_audio_chunk")
    srv.options.reply_speed = 0
    result(srv, "live/interrupt", {"channel_id": cid})
    interrupted, _ = sock.recv_obs("turn_interrupted")
    assert interrupted["response_id"] == chunk["response_id"]
    done = sock.recv_until(lambda f: f.get("observation") == "turn_completed")[-1]
    assert (done["response_id"], done["stop_reason"]) == (chunk["response_id"], "cancelled")
    assert result(srv, "live/interrupt", {"channel_id": cid}) == {"status": "interrupted"}  # idempotent
    sock.send_text("again")
    frames = until_completed(sock, timeout=30)
    assert "turn_interrupted" not in names(frames)


def test_truncate_pending_and_finished_items(make_server):
    srv = make_server(surface="live", paced=True)
    sock, opened = connect(srv)
    cid = opened["channel_id"]
    sock.send_text("talk")
    chunk, _ = sock.recv_obs("assistant_audio_chunk")
    srv.options.reply_speed = 0
    result(srv, "live/interrupt", {"channel_id": cid})
    sock.recv_until(lambda f: f.get("observation") == "turn_completed")
    item = srv.items()[0]
    assert result(srv, "live/truncate", {"channel_id": cid, "item_id": chunk["item_id"], "content_index": 0,
                                         "audio_played_ms": min(item["sent_ms"], 120)}) == {"status": "truncated"}
    truncated, _ = sock.recv_obs("assistant_transcript_truncated")
    # The whole pending transcript of the item, not a cut at the heard position.
    assert truncated == {"observation": "assistant_transcript_truncated", "provider_item_id": chunk["item_id"],
                         "content_index": 0, "response_id": chunk["response_id"], "text": item["text_sent"]}
    sock.send_text("finish this one")
    until_completed(sock)
    done_item = srv.items()[1]
    result(srv, "live/truncate", {"channel_id": cid, "item_id": done_item["item_id"], "content_index": 0,
                                  "audio_played_ms": 1000})
    truncated, _ = sock.recv_obs("assistant_transcript_truncated")
    assert "text" not in truncated  # the item's transcript already finished


@pytest.mark.parametrize("case", ["unknown", "overshoot"])
def test_bad_truncate_ends_the_channel(live, case):
    sock, opened = connect(live)
    cid = opened["channel_id"]
    sock.send_text("q")
    until_completed(sock)
    item = live.items()[0]
    item_id, ms = ("item_doesnotexist000000000", 10) if case == "unknown" else (item["item_id"], REPLY_MS + 1)
    assert result(live, "live/truncate", {"channel_id": cid, "item_id": item_id, "content_index": 0,
                                          "audio_played_ms": ms}) == {"status": "truncated"}
    close, frames = sock.expect_end()
    assert close is None and not of(frames, "assistant_transcript_truncated") and not of(frames, "error")
    live.wait_channel_ended(cid)
    assert error(live, "live/truncate", {"channel_id": cid, "item_id": item_id, "content_index": 0,
                                         "audio_played_ms": 1})["message"] == f"channel {cid} not found"


def test_tool_call(make_server):
    srv = make_server(surface="live", tool_trigger="weather", tool_duration_ms=200)
    sock, _ = connect(srv)
    sock.send_text("what's the weather like")
    requested, _ = sock.recv_obs("tool_call_requested")
    assert list(requested) == ["observation", "provider_call_id", "tool_name", "arguments"]
    assert requested["tool_name"] == "get_weather" and requested["arguments"] == {"city": "Lisbon"}
    assert re.fullmatch(r"call_[A-Za-z0-9]{16}", requested["provider_call_id"])
    tool_turn = sock.recv_until(lambda f: f.get("observation") == "turn_completed")[-1]
    assert tool_turn["stop_reason"] == "tool_use"
    frames = until_completed(sock)  # the continuation response
    assert REPLY_TEXT == "".join(f["delta"] for f in of(frames, "assistant_transcript_delta"))
    assert not of(frames, "tool_call_requested")  # no completion events on the live wire
    assert frames[-1]["response_id"] != tool_turn["response_id"]


@pytest.mark.parametrize("outcome", ["failed", "timed_out"])
def test_tool_errors_have_no_continuation(make_server, outcome):
    opts = dict(tool_call_every=1, tool_duration_ms=50)
    if outcome == "failed":
        opts["tool_outcome"] = "failed"
    else:
        opts.update(tool_duration_ms=400, live_tool_timeout_ms=100)
    srv = make_server(surface="live", **opts)
    sock, _ = connect(srv)
    sock.send_text("use the tool")
    sock.recv_obs("tool_call_requested")
    assert sock.recv_until(lambda f: f.get("observation") == "turn_completed")[-1]["stop_reason"] == "tool_use"
    srv.wait_for(lambda: srv.channels()[-1]["tool_results"] == 1)
    sock.send_text("sync")  # a typed turn: its own reply follows; nothing came for the tool
    frames = until_completed(sock)
    seen = [n for n in names(frames) if n != "realtime_transcript"]  # the tool output item is observed
    assert seen[:4] == ["status_changed", "status_changed", "user_transcript_final", "status_changed"]
    assert len(srv.items()) == 1  # only the typed turn's reply was spoken


def test_lossy_audio_lane_unit():
    """Control observations overtake queued audio; a full audio lane drops the new chunk."""
    import asyncio

    async def main() -> None:
        adapter = LiveAdapter(provider=None, turning_mode="provider_managed", ids=None, audio_capacity=2,  # type: ignore[arg-type]
                              on_tool_call=lambda *a: None, on_terminal=lambda m: None)
        for n in range(3):
            adapter.push({"observation": "assistant_audio_chunk", "n": n})
        adapter.push({"observation": "turn_completed", "n": 9})
        out = [await adapter.next_out() for _ in range(3)]
        assert [o["n"] for o in out] == [9, 0, 1] and adapter.audio_dropped == 1

    asyncio.run(main())


def test_slow_reader_loses_audio_not_control(make_server):
    """A client that does not read: the server's writes block, its lossy audio lane overflows
    and drops chunks (only a server log line), while control observations all arrive."""
    import socket as socketlib

    srv = make_server(surface="live", audio_lane_capacity=4, chunk_profile="100-200", ws_send_buffer=8192)
    opened = result(srv, "live/open", {"session_id": srv.session_id})
    sock = LiveSocket(opened["transport"]["url"], sockopt=((socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, 4096),))
    assert sock.recv() == {"observation": "ready"}
    sock.send_text("long answer")
    srv.wait_for(lambda: srv.channels()[-1]["audio_dropped"] > 0, timeout=30)
    frames = until_completed(sock, timeout=60)
    received = sum(len(base64.b64decode(f["data"])) for f in of(frames, "assistant_audio_chunk"))
    assert received < srv.items()[0]["sent_bytes"]
    assert "".join(f["delta"] for f in of(frames, "assistant_transcript_delta")) == REPLY_TEXT
    assert of(frames, "assistant_transcript_final")
