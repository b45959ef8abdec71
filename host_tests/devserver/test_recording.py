"""Recording: frames.jsonl / sent.jsonl / input.wav on disk, and the in-process API."""

from __future__ import annotations

import json
import threading
import wave

import pytest

from ._client import connect, fixture_pcm, silence


def test_record_dir(make_server, tmp_path):
    srv = make_server(record_dir=tmp_path)
    ch, _ = connect(srv)
    hello = fixture_pcm("user_hello.wav")
    ch.stream_audio(hello)
    ch.recv_event("turn_completed")
    ch.ws.send_binary(b"\x01")
    ch.send("garbage")
    ch.recv()
    ch.send({"type": "channel.close"})
    ch.expect_end()
    srv.wait_channel_ended(1)
    lines = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert lines == [json.loads(json.dumps(e)) for e in srv.frames()]
    assert lines[0]["frame"]["type"] == "channel.open" and lines[0]["channel"] == 1
    assert all(isinstance(e["t"], float) for e in lines)
    assert [e["t"] for e in lines] == sorted(e["t"] for e in lines)
    assert {"kind": "binary", "size": 1}.items() <= lines[-3].items()
    assert lines[-2]["frame"] == "garbage"  # unparsable text is kept raw
    assert lines[-1]["frame"] == {"type": "channel.close"}
    sent = [json.loads(line) for line in (tmp_path / "sent.jsonl").read_text().splitlines()]
    assert sent[0]["frame"]["type"] == "channel.opened"
    assert sent[-1]["frame"] == {"type": "channel.closed", "reason": "client_closed"}
    with wave.open(str(tmp_path / "input.wav"), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24000, 1, 2)
        assert wav.readframes(wav.getnframes()) == hello


def test_input_pcm_per_channel_and_total(srv):
    ch1, _ = connect(srv)
    ch1.send_audio(silence(20))
    assert ch1.sentinel() == []
    ch1.send({"type": "channel.close"})
    ch1.expect_end()
    srv.wait_channel_ended(1)
    ch2, _ = connect(srv)
    ch2.send_audio(b"\x01\x00" * 480)
    assert ch2.sentinel() == []
    assert srv.input_pcm(1) == silence(20)
    assert srv.input_pcm(2) == b"\x01\x00" * 480
    assert srv.input_pcm() == silence(20) + b"\x01\x00" * 480


def test_on_frame_hook_and_wait_for(srv):
    seen = []
    remove = srv.on_frame(lambda entry: seen.append((threading.get_ident(), entry["kind"])))
    ch, _ = connect(srv)
    ch.send_text("hi")
    srv.wait_for(lambda: len(seen) >= 2, timeout=5)
    assert {kind for _, kind in seen} == {"text"}
    assert {tid for tid, _ in seen} != {threading.get_ident()}  # hooks run in the loop thread
    remove()
    event = srv.wait_event("turn_completed")
    assert event == {"type": "turn_completed"}
    assert srv.events(type="turn_started") == [{"type": "turn_started"}]
    assert srv.client_frames(type="channel.input")[0]["chunk"] == {"kind": "text_chunk", "text": "hi"}
    with pytest.raises(TimeoutError):
        srv.wait_for(lambda: False, timeout=0.05, what="never")


def test_sent_frames_and_items_expose_the_reply(srv):
    ch, _ = connect(srv)
    ch.send_text("hi")
    srv.wait_event("turn_completed")
    chunks = srv.events(type="output_audio_chunk")
    item = srv.items()[0]
    assert item["chunks"] == len(chunks)
    assert sum(item["chunk_ms"]) == item["sent_ms"]
    assert [e["frame"] for e in srv.sent_frames(1)][0]["type"] == "channel.opened"
    chans = srv.channels()
    assert chans[0]["role"] == "primary" and chans[0]["opened"] and not chans[0]["closed"]
