"""Protocol v2 fault suite: the device (simulated board, reference image; some on CPython too)
against a scripted server that does what a real or a broken Meerkat 0.6.x server may do.

Each test names the defect of issue 11 it covers. Every test ends with rig.clean(): the host
read every line, no crash, no MemoryError, no token in the device's log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import played_prefix_ms, reference_image, wav_pcm
from rig import RUNTIMES, absent, device, max_message, one_line_each, opened, send_text, stats, wait_stats

from hostile import BINARY, FORMAT, Hostile, audio_ev, b64, ev, pcm, split


def _dumps(obj) -> str:
    import json

    return json.dumps(obj, separators=(",", ":"))


def _full(recording: Path, reply: bytes) -> bool:
    return played_prefix_ms(recording, reply) >= len(reply) / 48 - 1


# ------------------------------------------------------------------ 1: invented event types


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_new_event_type_per_frame_keeps_the_counters_bounded(tmp_path, runtime):
    async def flood(c):
        await c.accept()
        for i in range(400):
            await c.send_json(ev(f"invented_{i:03d}", n=i))
        await c.send_json(ev("input_transcript_final", text="flood over"))

    with Hostile.running("v2") as srv:
        srv.scripts = [flood]
        with device(srv, tmp_path, runtime) as (dev, rec):
            dev.wait_event("input_transcript_final", 30, where=lambda e: e["text"] == "flood over")
            s = stats(dev)
            assert s["state"] == "open"
            events = s["events"]
            assert len(events) <= 25 and events["other"] >= 400 - 24, events
            assert sum(events.values()) == 401  # every event counted, none lost
            send_text(dev, srv, "still there?")  # the channel still works
            dev.wait_event("turn_completed", 20)
            dev.wait_event("reply_done", 15)
    assert dev.summary["state"] == "closed" and "error" not in dev.summary
    assert len(srv.conns) == 1 and dev.summary["reconnects"] == 0


# ------------------------------------------------------------------ 2: surrogate-pair escapes

# A JSON text as Python's json.dumps writes it by default: characters outside the BMP as
# surrogate-pair escapes; and lone halves, which JSON allows too.
_ESCAPED = [
    r'{"type":"channel.event","event":{"type":"input_transcript_final","text":"parrot \ud83e\udd9c!"}}',
    r'{"type":"channel.event","event":{"type":"input_transcript_partial","text":"lone high \ud83e."}}',
    r'{"type":"channel.event","event":{"type":"input_transcript_partial","text":"lone low \udd9c."}}',
    r'{"type":"channel.error","code":"invalid_request","message":"no \ud83e\udd9c here"}',
]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_surrogate_escapes_reach_the_app_as_valid_utf8(tmp_path, runtime):
    async def escapes(c):
        await c.accept()
        for text in _ESCAPED:
            await c.send(text)

    with Hostile.running("v2") as srv:
        srv.scripts = [escapes]
        with device(srv, tmp_path, runtime) as (dev, rec):
            final = dev.wait_event("input_transcript_final", 15)
            partials = [dev.wait_event("input_transcript_partial", 10, n=i)["text"] for i in (1, 2)]
            err = dev.wait_event("error", 10, where=lambda e: e["code"] == "invalid_request")
    # The host decodes the board's output with replacement characters; a repaired string shows
    # the parrot itself, an unrepaired one a row of U+FFFD.
    assert final["text"] == "parrot \U0001f99c!"
    assert partials == ["lone high \ufffd.", "lone low \ufffd."]
    assert err["message"] == "no \U0001f99c here"


def test_an_error_code_the_app_reads_is_valid_utf8(tmp_path):
    async def odd_code(c):
        await c.accept()
        await c.send(r'{"type":"channel.error","code":"code_\ud83e\udd9c","message":"m"}')

    with Hostile.running("v2") as srv:
        srv.scripts = [odd_code]
        with device(srv, tmp_path) as (dev, rec):
            err = dev.wait_event("error", 15)
    assert err["code"] == "code_\U0001f99c"


def test_meerkat_sim_survives_surrogate_escapes_and_exits_0(tmp_path):
    async def escapes(c):
        await c.accept()
        for text in _ESCAPED:
            await c.send(text)

    image, heap = reference_image()
    name = image if isinstance(image, str) else image.name
    with Hostile.running("v2") as srv:  # meerkat-sim's board asks for the live surface first
        srv.scripts = [escapes]
        host, port = srv.rpc_address
        cmd = [str(Path(sys.executable).with_name("meerkat-sim")), "--rpc", f"{host}:{port}", "--session-id", srv.session_id,
               "--seconds", "5", "--barge-in-at-ms", "-1", "--image", name, "--heap", heap,
               "--speaker-out", str(tmp_path / "speaker.wav")]
        proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="strict", timeout=90,
                              cwd=tmp_path, env=dict(os.environ, PYTHONIOENCODING="utf-8"))
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr
    assert "user (transcribed): parrot \U0001f99c!" in proc.stdout
    assert "UnicodeDecodeError" not in proc.stderr and "Traceback" not in proc.stderr
    assert srv.errors == []


# ------------------------------------------------------------------ 3: a 2.7 KB item id

LONG_ID = "item_" + "x" * 2700


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_barge_in_on_audio_with_a_huge_item_id_keeps_the_channel(tmp_path, runtime):
    reply = pcm(4000, seed=31)

    async def long_id(c):
        await c.accept()
        f = await c.recv_text()
        await c.user_turn(f.text_input)
        await c.send_json(ev("output_text_delta", delta="A long story"))
        for chunk in split(reply, 100):
            await c.send_json(audio_ev(chunk, item_id=LONG_ID, content_index=0))
        await c.recv_type("channel.interrupt", 30)
        await c.send_json(ev("interrupted"))

    with Hostile.running("v2") as srv:
        srv.scripts = [long_id]
        with device(srv, tmp_path, runtime) as (dev, rec):
            opened(dev)
            send_text(dev, srv, "tell me a long story")
            wait_stats(dev, lambda s: s["audio_received_ms"] >= 500, 20, "reply audio")
            dev.send("interrupt")
            barge = dev.wait_event("barge_in", 10)
            send_text(dev, srv, "are you still there?")
            dev.wait_event("turn_completed", 20)  # the channel survived the barge-in
            dev.wait_event("reply_done", 15)
    s = dev.summary
    assert barge["reason"] == "api" and barge["item_id"] == LONG_ID
    assert len(srv.client_frames("channel.interrupt")) == 1  # the interrupt went out
    truncates = srv.client_frames("channel.barge_in_truncate")
    # No truncate naming the id: it is not kept (or refused locally, counted and logged).
    assert all(LONG_ID not in f.data.decode() for f in truncates)
    assert truncates == [] or s["control_dropped"] >= 1
    assert s["reconnects"] == 0 and len(srv.conns) == 1 and s["state"] == "closed"
    assert absent(wav_pcm(rec), reply[3500 * 48 :])  # the reply really was cut


# ------------------------------------------------------------------ 4: a tool call that never completes


def test_a_tool_call_that_never_completes_releases_the_microphone(tmp_path):
    import time

    async def hung_tool(c):
        await c.accept()
        f = await c.recv_text()
        await c.user_turn(f.text_input)  # turn_committed: the reply is due, the mic is held
        await c.send_json(ev("tool_call_requested", call_id="call_1", tool_name="get_weather"))
        # ... and nothing more: no completion, no output, no turn_completed

    with Hostile.running("v2") as srv:
        srv.scripts = [hung_tool]
        with device(srv, tmp_path, tool_idle_ms=5000) as (dev, rec):  # config: the tool guard
            opened(dev)
            send_text(dev, srv, "what's the weather?")
            dev.wait_event("tool_call_requested", 15)
            t_tool = time.monotonic()
            err = dev.wait_event("error", 30, where=lambda e: e["code"] == "tool_timeout")
            t_out = time.monotonic()
            dev.wait_event("reply_done", 10)
            srv.wait_for(lambda: [f for f in srv.audio_frames() if f.t > t_out], 10, "microphone audio again")
    held = [f for f in srv.audio_frames() if t_tool + 1 < f.t < t_out - 1]
    assert held == [], f"{len(held)} microphone frames sent while the tool call was pending"
    assert "tool" in err["message"]


# ------------------------------------------------------------------ 5: closes the device did not ask for


def _closer(reason):
    async def script(c):
        await c.accept()
        await c.send_json({"type": "channel.closed", "reason": reason})
        await c.fin()  # and the socket is dropped, no Close frame (v2 2)

    return script


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_unprompted_client_closed_is_not_a_silent_stop(tmp_path, runtime):
    with Hostile.running("v2") as srv:
        srv.scripts = [_closer("client_closed")]
        with device(srv, tmp_path, runtime) as (dev, rec):
            dev.wait_event("reconnect", 15)
            opened(dev, n=2)  # a new channel, with a new token
            send_text(dev, srv, "hello again")
            dev.wait_event("turn_completed", 20)
    opens = srv.client_frames("channel.open")
    assert len(opens) == 2 and opens[0].json["open_token"] != opens[1].json["open_token"]
    assert len(srv.rpc("realtime/open_info")) == 2
    assert any("did not close it" in line for line in dev.logs())
    assert dev.summary["state"] == "closed" and dev.summary["reconnects"] == 1


def test_unknown_close_reasons_are_retried_with_backoff(tmp_path):
    reason = "a_reason_from_a_newer_server"
    with Hostile.running("v2") as srv:
        srv.scripts = [_closer(reason)] * 3
        with device(srv, tmp_path) as (dev, rec):
            opened(dev, n=4)
            retries = dev.events("reconnect")
            send_text(dev, srv, "hello")
            dev.wait_event("turn_completed", 20)
    assert [r["attempt"] for r in retries] == [1, 2, 3]  # the channels were short: no fresh budget
    for r in retries:  # full jitter under the doubling ceiling (initial 50 ms, max 400 ms)
        assert 0 <= r["delay_ms"] <= min(50 << (r["attempt"] - 1), 400), r
    assert len([line for line in dev.logs() if reason in line]) >= 3
    assert dev.summary["state"] == "closed"


def test_a_refused_channel_open_is_retried_with_a_fresh_token(tmp_path):
    async def busy(c):
        await c.recv_type("channel.open")
        await c.refuse_v2("target_busy", "target already has an active primary realtime channel")

    with Hostile.running("v2") as srv:
        srv.scripts = [busy]
        with device(srv, tmp_path) as (dev, rec):
            opened(dev)
    opens = srv.client_frames("channel.open")
    assert len(opens) == 2 and opens[0].json["open_token"] != opens[1].json["open_token"]
    assert len(srv.rpc("realtime/open_info")) == 2
    assert any("target_busy" in line for line in dev.logs())


def test_the_close_reason_the_app_reads_is_valid_utf8(tmp_path):
    async def parrot(c):
        await c.accept()
        await c.send(r'{"type":"channel.closed","reason":"gone \ud83e\udd9c"}')
        await c.fin()

    policy = {"max_attempts": 1, "initial_backoff_ms": 10, "max_backoff_ms": 20, "max_total_ms": 0}
    with Hostile.running("v2") as srv:
        srv.scripts = [parrot, parrot]
        with device(srv, tmp_path, reconnect=policy) as (dev, rec):
            s = dev.wait_summary(20)
    assert s["state"] == "error" and "gave up" in s["error"]
    assert s["close_reason"] == "gone \U0001f99c"  # stats() is the app's too


def test_the_bootstrap_error_the_app_reads_is_valid_utf8(tmp_path):
    def refuse(srv, call):
        return b'{"jsonrpc":"2.0","id":%d,"error":{"code":-32001,"message":"no session \\ud83e\\udd9c here"}}' % call.id

    with Hostile.running("v2") as srv:
        srv.answers["realtime/open_info"] = [refuse]
        with device(srv, tmp_path) as (dev, rec):
            s = dev.wait_summary(20)
    assert s["state"] == "error" and "no session \U0001f99c here" in s["error"], s["error"]


def test_a_close_reason_that_retrying_cannot_fix_stops_with_a_clear_error(tmp_path):
    with Hostile.running("v2") as srv:
        srv.scripts = [_closer("authentication_failed")]
        with device(srv, tmp_path) as (dev, rec):
            s = dev.wait_summary(20)
    assert s["state"] == "error" and "authentication_failed" in s["error"]
    assert s["reconnects"] == 0 and len(srv.client_frames("channel.open")) == 1


# ------------------------------------------------------------------ 6: whatever the board prints


def test_hostile_strings_neither_forge_log_lines_nor_break_the_host(tmp_path):
    forged = "E link: forged record"

    async def nasty(c):
        await c.accept()
        # Control characters, a newline that would start a fake record, an escape sequence.
        await c.send_json({"type": "channel.error", "code": "weird\ncode", "message": f"oops\n{forged}\r\x1b[31mred\x00\x07"})
        # A text frame that is not UTF-8: dropped as malformed, counted.
        await c.send(b'{"type":"channel.event","event":{"type":"input_transcript_final","text":"bad \xff\xfe\xc3( bytes"}}')
        await c.send_json(ev("input_transcript_final", text=f"line one\n{forged}"))
        # A close reason with a surrogate pair, a lone half and control characters.
        await c.send(r'{"type":"channel.closed","reason":"bye \ud83e\udd9c \ud800 \u0007\n' + forged + '"}')
        await c.fin()

    with Hostile.running("v2") as srv:
        srv.scripts = [nasty]
        with device(srv, tmp_path) as (dev, rec):
            dev.wait_event("input_transcript_final", 15)
            opened(dev, n=2)  # the odd close reason is retried
            s = stats(dev)
            send_text(dev, srv, "hello")
            dev.wait_event("turn_completed", 20)
    logs = dev.logs()
    assert one_line_each(logs)
    assert any("oops\\n" + forged in line for line in logs)  # escaped, on one line
    assert s["drops"]["malformed"] == 1
    assert dev.events("input_transcript_final")[0]["text"] == f"line one\n{forged}"  # the app gets it whole
    err = dev.events("error")[0]
    assert err["code"] == "weird\ncode" and err["message"].startswith("oops\n")


def test_a_close_frame_reason_cannot_forge_a_log_line(tmp_path):
    """Found by this suite (fixed in 898b326): ws.py logged the server's Close reason raw."""
    forged = "E link: forged by a close frame"

    async def close_with_newline(c):
        await c.accept()
        await c.close(1011, "bye\n" + forged)

    with Hostile.running("v2") as srv:
        srv.scripts = [close_with_newline]
        with device(srv, tmp_path) as (dev, rec):
            opened(dev, n=2)
    assert one_line_each(dev.logs())


def test_an_upgrade_refusal_cannot_forge_a_log_line(tmp_path):
    """Found by this suite (fixed in 898b326): the HTTP status line went raw into the
    WebSocketError that link.py logs."""
    forged = "E link: forged by a status line"

    with Hostile.running("v2") as srv:
        srv.upgrade_answers = [f"HTTP/1.1 503 busy\n{forged}\r\nContent-Length: 0\r\n\r\n".encode()]
        with device(srv, tmp_path) as (dev, rec):
            opened(dev)  # the next attempt is upgraded normally
    assert any("503" in line for line in dev.logs())
    assert one_line_each(dev.logs())


# ------------------------------------------------------------------ smaller findings: audio data


def _chunk_text(data: str) -> str:
    """An output_audio_chunk with the base64 text exactly as given (escapes, no padding)."""
    return '{"type":"channel.event","event":{"type":"output_audio_chunk","chunk":{"mime_type":"audio/pcm","sample_rate_hz":24000,"channels":1,"data":"%s"}}}' % data


def _odd_chunks(seed: int) -> list[bytes]:
    # 2401 and 2402 samples: base64 with one "=" and with "==" of padding, alternately
    rnd_pcm = pcm(1200, seed)
    out, i, k = [], 0, 0
    while i < len(rnd_pcm):
        n = 4802 if k % 2 == 0 else 4804
        out.append(rnd_pcm[i : i + n])
        i += n
        k += 1
    return out


@pytest.mark.parametrize("style", ["unpadded", "escaped_slash", "unicode_escapes_in_fragments"])
def test_legal_but_unusual_base64_plays_in_full(tmp_path, style):
    chunks = _odd_chunks(seed=41)
    reply = b"".join(chunks)

    async def unusual(c):
        await c.accept()
        f = await c.recv_text()
        await c.user_turn(f.text_input)
        for chunk in chunks:
            data = b64(chunk)
            if style == "unpadded":
                await c.send(_chunk_text(data.rstrip("=")))
            elif style == "escaped_slash":
                assert "/" in data
                await c.send(_chunk_text(data.replace("/", "\\/")))
            else:
                text = _chunk_text(data.replace("A", "\\u0041").replace("/", "\\/"))
                # cut inside escapes: after a backslash, and inside the four hex digits
                at = text.index("\\u0041")
                cut = [at + 1, at + 4, text.index("\\/") + 1, len(text) - 3]
                await c.send_fragments(text, cut, ping=True)
        await c.send_json(ev("turn_completed"))

    with Hostile.running("v2") as srv:
        srv.scripts = [unusual]
        with device(srv, tmp_path) as (dev, rec):
            opened(dev)
            send_text(dev, srv, "play it")
            dev.wait_event("turn_completed", 20)
            dev.wait_event("reply_done", 15)
            s = stats(dev)
    assert set(s["drops"].values()) == {0}, s["drops"]
    assert _full(rec, reply), played_prefix_ms(rec, reply)


def test_every_dropped_chunk_is_counted_and_logged_with_its_reason(tmp_path):
    wrong_rate, bad_text, good = pcm(200, seed=43), pcm(200, seed=44), pcm(600, seed=45)
    broken = b64(bad_text)
    broken = broken[:400] + "!" + broken[401:]  # one character outside the alphabet

    async def bad_chunks(c):
        await c.accept()
        f = await c.recv_text()
        await c.user_turn(f.text_input)
        await c.send_json(ev("output_audio_chunk", chunk=dict(FORMAT, sample_rate_hz=16000, data=b64(wrong_rate))))
        await c.send(_chunk_text(broken))
        await c.send(b"\x00\x01 a binary message", BINARY)
        for chunk in split(good, 100):
            await c.send_json(audio_ev(chunk))
        await c.send_json(ev("turn_completed"))

    with Hostile.running("v2") as srv:
        srv.scripts = [bad_chunks]
        with device(srv, tmp_path) as (dev, rec):
            opened(dev)
            send_text(dev, srv, "play it")
            dev.wait_event("turn_completed", 20)
            dev.wait_event("reply_done", 15)
            s = stats(dev)
    drops = {k: v for k, v in s["drops"].items() if v}
    assert drops == {"bad_format": 1, "bad_base64": 1, "binary": 1}, drops
    for reason in drops:  # one log line each, saying why
        assert len([line for line in dev.logs() if f"dropped ({reason})" in line]) == 1, reason
    recording = wav_pcm(rec)
    assert absent(recording, wrong_rate) and absent(recording, bad_text)  # neither played a sample
    assert _full(rec, good) and s["reconnects"] == 0


@pytest.mark.parametrize("runtime,framing", [("micropython", "one_frame"), ("cpython", "one_frame"),
                                             ("micropython", "fragments_and_pings")])
def test_a_2_s_audio_chunk_plays_without_a_reconnect(tmp_path, runtime, framing):
    big = pcm(2000, seed=51)  # one message of about 128 KB: 96 000 bytes of PCM in base64

    async def one_big_chunk(c):
        await c.accept()
        f = await c.recv_text()
        await c.user_turn(f.text_input)
        await c.send_json(ev("output_text_delta", delta="One big chunk"))
        payload = _dumps(audio_ev(big))
        if framing == "one_frame":
            await c.send(payload)
        else:
            data = payload.index('"data"')
            await c.send_fragments(payload, [1, data + 3, data + 9, 40000, 40001, len(payload) - 2], ping=True)
        await c.send_json(ev("turn_completed"))

    with Hostile.running("v2") as srv:
        srv.scripts = [one_big_chunk]
        with device(srv, tmp_path, runtime) as (dev, rec):
            opened(dev)
            send_text(dev, srv, "say a lot at once")
            dev.wait_event("turn_completed", 20)
            dev.wait_event("reply_done", 15)
            s = stats(dev)
    assert s["reconnects"] == 0 and len(srv.conns) == 1
    assert set(s["drops"].values()) == {0}, s["drops"]
    assert _full(rec, big), played_prefix_ms(rec, big)
    if framing != "one_frame":
        assert len(srv.client_frames(None)) and [f for f in srv.frames if f.op == "pong"]  # pings answered


# ------------------------------------------------------------------ smaller findings: sizes



def test_a_message_over_max_message_is_dropped_and_counted_and_one_under_it_delivered(tmp_path):
    async def sizes(c):
        await c.accept()
        await c.send_json(ev("input_transcript_final", text="x" * 40000))
        fits = await c.signalled("fits")  # as big as the board's max_message allows
        await c.send_json(ev("input_transcript_final", text="y" * fits))

    with Hostile.running("v2") as srv:
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


def test_a_huge_bootstrap_answer_is_refused_and_retried(tmp_path):
    def padded(srv, call):
        answer = srv.default_answer(call)
        answer["result"]["padding"] = "x" * 50000
        return answer

    with Hostile.running("v2") as srv:
        srv.answers["realtime/open_info"] = [padded]
        with device(srv, tmp_path) as (dev, rec):
            opened(dev)
            send_text(dev, srv, "hi")
            dev.wait_event("turn_completed", 20)
    assert len(srv.rpc("realtime/open_info")) == 2
    opens = srv.client_frames("channel.open")
    assert [o.json["open_token"] for o in opens] == [srv.tokens[1]]  # the refused answer's token unused
    assert any("too large" in line for line in dev.logs())
    assert dev.events("reconnect") and dev.summary["state"] == "closed"


# ------------------------------------------------------------------ smaller findings: format mismatch


def test_one_audio_format_mismatch_pauses_the_uplink_and_audio_resumes(tmp_path):
    mismatch = {"type": "channel.error", "code": "audio_format_mismatch",
                "message": "audio input format does not match provider negotiated format: expected audio/pcm @ 24000 Hz / 1 ch, got audio/pcm @ 16000 Hz / 1 ch",
                "details": {"kind": "audio_format_mismatch", "expected": FORMAT, "actual": dict(FORMAT, sample_rate_hz=16000)}}
    t_err = []

    async def once(c):
        await c.accept()
        await c.recv(lambda f: f.is_audio, 10, "microphone audio")
        await c.send_json(mismatch)
        import time

        t_err.append(time.monotonic())

    with Hostile.running("v2") as srv:
        srv.scripts = [once]
        with device(srv, tmp_path) as (dev, rec):
            dev.wait_event("error", 15, where=lambda e: e["code"] == "audio_format_mismatch")
            srv.wait_for(lambda: t_err and [f for f in srv.audio_frames() if f.t > t_err[0] + 6], 20,
                         "microphone audio after the pause")
    after = t_err + [f.t for f in srv.audio_frames() if f.t > t_err[0]]
    gaps = [b - a for a, b in zip(after, after[1:])]
    assert max(gaps) >= 2.0, gaps[:10]  # paused (5 s), then resumed: not muted for good
    assert any("audio paused" in line for line in dev.logs())
    assert dev.summary["reconnects"] == 0


# ------------------------------------------------------------------ the late `interrupted`

A = pcm(4000, seed=101)  # the reply the user talks over
A_STALE = pcm(600, seed=102)  # its audio the server still forwards after the cancel
B = pcm(1500, seed=103)  # the next reply


def _late(order):
    explicit = order == "explicit_commit"  # text turns there get no turn events (corrections 2)

    async def script(c):
        await c.accept()
        f = await c.recv_text()
        if explicit:
            await c.recv_type("channel.commit_turn")
        else:
            await c.user_turn(f.text_input)
        await c.send_json(ev("output_text_delta", delta="Reply A"))
        for chunk in split(A, 100):
            await c.send_json(audio_ev(chunk))
        await c.recv_type("channel.interrupt", 30)
        # v0.6.2: output of the cancelled response still comes, then the next turn's events,
        # and `interrupted` only when OpenAI's response.done for the cancel arrives.
        await c.send_json(ev("output_text_delta", delta="stale A"))
        for chunk in split(A_STALE, 100):
            await c.send_json(audio_ev(chunk))
        t = await c.recv_text()
        if explicit:
            await c.recv_type("channel.commit_turn")
            await c.send_json(ev("interrupted"))
        elif order == "before_commit":
            await c.send_json(ev("interrupted"))
        elif order == "completed_instead":
            await c.send_json(ev("turn_completed"))  # A had finished: nothing was cancelled
        if not explicit:
            await c.user_turn(t.text_input)
        if order == "after_commit":
            await c.send_json(ev("interrupted"))
        await c.send_json(ev("output_text_delta", delta="Reply B"))
        for chunk in split(B, 100):
            await c.send_json(audio_ev(chunk))
        await c.send_json(ev("turn_completed"))

    return script


@pytest.mark.parametrize("runtime,order", [("micropython", "after_commit"), ("cpython", "after_commit"),
                                           ("micropython", "before_commit"), ("micropython", "completed_instead"),
                                           ("micropython", "explicit_commit")])
def test_after_a_typed_barge_in_the_next_reply_plays_in_full(tmp_path, runtime, order):
    mode = "explicit_commit" if order == "explicit_commit" else "provider_managed"
    with Hostile.running("v2") as srv:
        srv.scripts = [_late(order)]
        with device(srv, tmp_path, runtime, turning_mode=mode) as (dev, rec):
            opened(dev)
            send_text(dev, srv, "tell me about A")
            wait_stats(dev, lambda s: s["audio_received_ms"] >= 500, 20, "reply A playing")
            send_text(dev, srv, "no, tell me about B")  # typed over the reply
            dev.wait_event("turn_completed", 30)
            dev.wait_event("reply_done", 15)
            s = stats(dev)
    barges = dev.events("barge_in")
    assert len(barges) == 1 and barges[0]["reason"] == "text"
    assert [e["delta"] for e in dev.events("output_text_delta")] == ["Reply A", "Reply B"]
    assert len(dev.events("turn_completed")) == 1  # B's, and A's never reached the app
    assert _full(rec, B), played_prefix_ms(rec, B)
    recording = wav_pcm(rec)
    heard = played_prefix_ms(rec, A)
    assert heard < 3500  # A was cut ...
    assert absent(recording, A[int(heard + 60) * 48 :]) and absent(recording, A_STALE)  # ... and stayed cut
    assert s["late_chunks"] > 0 and s["reconnects"] == 0
