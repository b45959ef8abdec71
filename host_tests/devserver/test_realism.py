"""v2 as Meerkat 0.6.2 really behaves (reference: corrections 1-8; issue 11): late `interrupted`
after stale deltas, typed barge-in in both turning modes, tool calls that block the socket
loop, truncation answered late, long audio chunks, the 1008 close that does not wait."""

from __future__ import annotations

import base64
import json

import pytest

from ._client import Channel, connect, event_types, events, fixture_pcm, open_frame
from ._live_client import parse_frames, raw_upgrade, read_all

# Small chunks at real-time pace and a fixed 500 ms cancel: the cancelled reply certainly
# streams on (stale deltas) before its response.done(cancelled) arrives.
STALE = dict(item_ids=True, reply_speed=1.0, reply_head_start_ms=0, chunk_profile="20-40", cancel_latency_ms=500)


def chunk_items(frames: list[dict]) -> list[str]:
    return [e["item_id"] for e in events(frames) if e["type"] == "output_audio_chunk"]


def test_typed_barge_in_interrupted_after_the_next_turn_committed(make_server):
    srv = make_server(**STALE)
    ch, _ = connect(srv)
    ch.send_text("first question")
    first, _ = ch.recv_event("output_audio_chunk")
    srv.options.reply_speed = 0.0  # the next reply comes unpaced (this one is scheduled already)
    ch.send_text("second question")  # preempts: response.cancel, then the typed turn
    _, frames = ch.recv_event("interrupted")
    types = event_types(frames)
    committed = types.index("turn_committed")
    assert types[committed - 3 : committed + 1] == ["turn_started", "input_transcript_partial",
                                                   "input_transcript_final", "turn_committed"]
    stale = chunk_items(frames[committed:])
    assert stale and set(stale) == {first["item_id"]}  # the cancelled reply's audio, after turn_committed
    assert "turn_completed" not in types
    _, frames = ch.recv_event("turn_completed")
    new = chunk_items(frames)
    assert new and first["item_id"] not in new  # the next reply comes in full, on a new item
    assert b"".join(base64.b64decode(e["chunk"]["data"]) for e in events(frames)
                    if e["type"] == "output_audio_chunk") == fixture_pcm("assistant_reply.wav")
    assert [i["state"] for i in srv.items()] == ["interrupted", "completed"]


def test_interrupt_is_late_and_stale_deltas_come_first(make_server):
    srv = make_server(**STALE)
    ch, _ = connect(srv)
    ch.send_text("question")
    first, _ = ch.recv_event("output_audio_chunk")
    ch.send({"type": "channel.interrupt"})
    early = ch.sentinel()  # the interrupt was processed: it answers nothing at once
    assert "interrupted" not in event_types(early)
    _, frames = ch.recv_event("interrupted")
    assert chunk_items(early + frames)  # stale chunks before it
    assert ch.sentinel() == []  # nothing of the cancelled reply after it, and no turn_completed
    sent_ms = srv.items()[0]["sent_ms"]
    assert 0 < sent_ms < 9156


def test_explicit_commit_typed_barge_in(make_server):
    """No turn events for typed turns in explicit_commit; input does not preempt such a reply
    (the turn never reached Preemptible: no turn_committed); the client interrupts."""
    srv = make_server(**STALE)
    ch, _ = connect(srv, mode="explicit_commit")
    ch.send_text("first")
    ch.send({"type": "channel.commit_turn"})
    first, _ = ch.recv_event("output_audio_chunk")
    srv.options.reply_speed = 0.0
    ch.send_text("second")  # staged, not preemptive
    ch.send({"type": "channel.interrupt"})
    ch.send({"type": "channel.commit_turn"})
    _, frames = ch.recv_event("interrupted")
    _, after = ch.recv_event("turn_completed")
    types = event_types(frames + after)
    for absent in ("turn_started", "turn_committed", "input_transcript_partial", "input_transcript_final"):
        assert absent not in types
    assert types.count("interrupted") == 1 and types.count("turn_completed") == 1
    assert set(chunk_items(after)) - {first["item_id"]}  # the next reply arrived


def test_server_vad_barge_in(make_server):
    """Speech over the reply: the first input frame preempts (response.cancel); server VAD's
    speech start while output is active gives `interrupted` then `turn_started`. A stale delta
    of the cancelled reply re-arms the adapter's interrupt latch, so the commit that follows
    may report `interrupted` (with `turn_started`) once more (live.rs@v0.6.2 L1086-1091,
    L1434-1453). Either way nothing of it completes."""
    srv = make_server(item_ids=True, reply_speed=1.0, reply_head_start_ms=0, chunk_profile="20-40")
    ch, _ = connect(srv)
    ch.send_text("tell me")
    first, _ = ch.recv_event("output_audio_chunk")
    srv.options.reply_speed = 0.0
    ch.stream_audio(fixture_pcm("user_hello.wav"))
    _, frames = ch.recv_event("turn_committed")
    types = event_types(frames)
    assert types.index("interrupted") < types.index("turn_started")
    for i, kind in enumerate(types):
        if kind == "interrupted":
            assert types[i + 1] == "turn_started"
    _, frames = ch.recv_event("turn_completed")
    items = chunk_items(frames)
    new = [i for i in items if i != first["item_id"]]
    assert new and items.index(new[0]) == len(items) - len(new)  # stale chunks only before the new reply
    assert srv.items()[0]["state"] == "interrupted" and srv.items()[1]["state"] == "completed"


@pytest.mark.parametrize("hang", [False, True])
def test_tool_call_blocks_the_socket_loop(make_server, hang):
    from meerkat_tools.devserver import Faults

    srv = make_server(tool_call_every=1, tool_duration_ms=300, faults=Faults(tool_hang=hang, tool_hang_for=0.6))
    ch, _ = connect(srv)
    ch.send_text("what is the weather")
    srv.wait_for(lambda: srv.channels()[0]["loop_blocked"], timeout=5)
    ch.ws.ping(b"anyone?")
    ch.send("sentinel")  # read only once the tool is done
    _, frames = ch.recv_event("tool_call_completed", timeout=10)
    requested = frames[-2]["event"]
    assert requested["type"] == "tool_call_requested" and requested["tool_name"] == "get_weather"
    assert frames[-1]["event"] == {"type": "tool_call_completed", "call_id": requested["call_id"]}  # back to back
    assert "turn_completed" not in event_types(frames)  # none for the tool-use response
    start, end = srv.channels()[0]["tool_runs"][0]
    assert end - start >= (0.6 if hang else 0.3)
    read = [e for e in srv.frames(1) if e["kind"] == "ping" or e["frame"] == "sentinel"]
    assert read and all(e["t"] >= end for e in read)  # nothing was read (or pinged back) meanwhile
    _, frames = ch.recv_event("turn_completed")
    assert event_types(frames).count("turn_completed") == 1
    assert any(t == "output_audio_chunk" for t in event_types(frames))  # the continuation streamed


@pytest.mark.parametrize("outcome", ["timed_out", "failed"])
def test_tool_failure_outcomes_have_no_continuation(make_server, outcome):
    if outcome == "timed_out":
        srv = make_server(tool_call_every=1, tool_duration_ms=2000)
        info = srv.open_info(channel_config={"tool_timeout": {"type": "finite", "timeout_ms": 200}})
        ch = Channel(info["ws_url"])
        ch.send(open_frame(info["open_token"]))
        assert ch.recv()["type"] == "channel.opened"
    else:
        srv = make_server(tool_call_every=1, tool_duration_ms=100, tool_outcome="failed")
        ch, _ = connect(srv)
    ch.send_text("go")
    _, frames = ch.recv_event(f"tool_call_{outcome}", timeout=10)
    event = frames[-1]["event"]
    call_id = frames[-2]["event"]["call_id"]
    if outcome == "timed_out":
        assert list(event) == ["type", "call_id", "elapsed_ms"] and event["call_id"] == call_id
        assert 200 <= event["elapsed_ms"] < 2000
    else:
        assert event == {"type": "tool_call_failed", "call_id": call_id,
                         "error": "tool get_weather failed: devserver scripted failure"}
    # An error output asks for no continuation: no reply, no turn_completed, ever.
    assert ch.sentinel() == []
    assert srv.items() == []


def test_tools_are_off_by_default(srv):
    ch, _ = connect(srv)
    for text in ("what is the weather", "call a tool"):
        ch.send_text(text)
        _, frames = ch.recv_event("turn_completed")
        assert not [t for t in event_types(frames) if t.startswith("tool_call")]


def test_tool_trigger_phrase(make_server):
    srv = make_server(tool_trigger="weather", tool_duration_ms=50)
    ch, _ = connect(srv)
    ch.send_text("hello")
    _, frames = ch.recv_event("turn_completed")
    assert "tool_call_requested" not in event_types(frames)
    ch.send_text("And the WEATHER?")
    _, frames = ch.recv_event("turn_completed")
    assert "tool_call_requested" in event_types(frames)


def test_truncate_is_answered_after_a_delay(make_server):
    srv = make_server(truncate_latency_ms=300)
    ch, _ = connect(srv)
    ch.send_text("q")
    ch.recv_event("turn_completed")
    ch.send({"type": "channel.barge_in_truncate", "item_id": srv.items()[0]["item_id"], "content_index": 0,
             "audio_played_ms": 100})
    assert ch.sentinel() == []  # not answered at once
    event, _ = ch.recv_event("assistant_transcript_truncated")
    assert event["audio_played_ms"] == 100


def test_default_chunks_include_long_ones(make_server):
    srv = make_server(reply_speed=0.0)  # the default chunk profile
    ch, _ = connect(srv)
    ch.send_text("q")
    ch.recv_event("turn_completed")
    chunk_ms = srv.items()[0]["chunk_ms"]
    assert max(chunk_ms) >= 500
    assert max(len(r) for r in ch.raw) > 16384  # beyond a 16 KB receive limit


def test_close_1008_does_not_wait_for_the_client(srv):
    host, port = srv.ws_url[len("ws://"):].split("/")[0].rsplit(":", 1)
    sock, head, rest = raw_upgrade(host, int(port), "/realtime/ws")
    assert head.startswith(b"HTTP/1.1 101 ")
    # A masked text frame "nope", then we never answer the server's Close.
    payload = b"nope"
    mask = b"\x01\x02\x03\x04"
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    frames = parse_frames(rest + read_all(sock))
    assert [op for op, _ in frames] == [1, 1, 8]
    assert json.loads(frames[1][1]) == {"type": "channel.closed", "reason": "invalid_frame"}
    assert frames[2][1] == (1008).to_bytes(2, "big") + b"invalid_frame"
    sock.close()


def test_a_late_cancelled_completion_ends_the_next_turns_phase(make_server):
    """After a typed barge-in, the cancelled reply's late turn_completed(cancelled) (not sent)
    ends the product-turn phase of the *new* turn, so input during the new reply does not
    preempt it (the v0.6.2 phase machine; reference 5.3)."""
    srv = make_server(**STALE)
    ch, _ = connect(srv)
    ch.send_text("first")
    ch.recv_event("output_audio_chunk")
    srv.options.reply_speed = 8.0  # the second reply: still streaming for about a second
    ch.send_text("second")
    ch.recv_event("interrupted")
    ch.recv_event("output_audio_chunk")
    assert srv.channels()[0]["phase"] == "idle"
    ch.send_audio(b"\x00\x00" * 960)  # input during the second reply: not preemptive now
    _, frames = ch.recv_event("turn_completed", timeout=20)
    assert "interrupted" not in event_types(frames)
    assert [i["state"] for i in srv.items()] == ["interrupted", "completed"]
