"""meerkat-probe against the development server, in process, on 127.0.0.1, on both surfaces: text
and WAV turns, what the server received, the printed lines, and the errors a user meets (bad
session, nothing listening, wrong port, refused open or token, a channel that never opens, a
failed channel), plus the auto detection of the surface both ways."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import subprocess
import sys
import threading
import wave

import pytest
import websocket

from meerkat_tools import paths, probe
from meerkat_tools.devserver import DevServer, Faults, ServerOptions

QUESTION = paths.FIXTURES / "user_question.wav"
# A quick reply (no pacing) after a short pause: output must not start before the probe has
# stopped sending audio, as with a real model, or its last frames would preempt the reply (v2).
FAST = dict(reply_latency_ms=300, reply_speed=0.0)
# The v2 tests read item ids on output audio: the dev server's labelled extension, short ids.
V2_IDS = dict(surface="v2", item_ids=True, id_style="short")


@pytest.fixture
def server():
    stack = contextlib.ExitStack()

    def make(faults: Faults | None = None, **overrides) -> DevServer:
        opts = dict(FAST, **overrides)
        return stack.enter_context(DevServer.running(ServerOptions(faults=faults or Faults(), **opts)))

    with stack:
        yield make


def rpc(srv: DevServer) -> str:
    return "%s:%d" % srv.rpc_address


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = probe.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("meerkat-probe: error: "), err
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wav_pcm(path) -> bytes:
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes())


# -- protocol v2: turns ----------------------------------------------------------------------


def test_text_turn(server, capsys):
    srv = server(**V2_IDS)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", srv.session_id,
                         "--text", "What is the weather?")
    assert code == 0, out + err
    token = srv.client_frames(type="channel.open")[0]["open_token"]
    assert token not in out + err and f"token {token[:8]}…" in out
    lines = out.splitlines()
    assert lines[0].startswith(f"bootstrap: realtime/open_info via rpc {rpc(srv)} for session_target {srv.session_id}")
    assert lines[1].startswith(f"open_info: ws_url {srv.ws_url}, token {token[:8]}…, expires ")
    assert lines[2] == "surface: v2 (protocol 2: Meerkat 0.6.0 to 0.6.4)"
    assert "channel.opened role primary, protocol 2, status ready (attempt 0)" in out
    assert "capabilities: input text,audio; output text,audio; turning provider_managed,explicit_commit; " in out
    assert "audio in audio/pcm @ 24000 Hz / 1 ch; audio out audio/pcm @ 24000 Hz / 1 ch" in out
    for line in ('text sent: "What is the weather?"', 'input_transcript_final "What is the weather?"',
                 "turn_committed", "output_audio_chunk item_1 ", "turn_completed", "channel.closed client_closed"):
        assert line in out, line
    item = srv.items()[0]
    assert f"reply: {item['sent_ms']} ms of audio in {item['chunks']} chunks" in out
    assert out.rstrip().endswith("meerkat-probe: ok")
    # What the server got: one realtime/open_info, then channel.open first (protocol "2"), the
    # text, channel.close.
    assert [c["method"] for c in srv.rpc_calls()] == ["realtime/open_info"]
    frames = srv.client_frames()
    assert [f["type"] for f in frames] == ["channel.open", "channel.input", "channel.close"]
    assert frames[0] == {"type": "channel.open", "protocol_version": "2", "open_token": token,
                         "role": "primary", "turning_mode": "provider_managed"}
    assert frames[1]["chunk"] == {"kind": "text_chunk", "text": "What is the weather?"}


def test_wav_turn_in_real_time_over_rest(server, capsys, tmp_path):
    srv = server(**V2_IDS)
    reply_wav = tmp_path / "reply.wav"
    code, out, err = run(capsys, "--rest", srv.rest_url, "--session-id", srv.session_id,
                         "--wav", str(QUESTION), "--save-reply", str(reply_wav))
    assert code == 0, out + err
    pcm = wav_pcm(QUESTION)
    entries = [e for e in srv.frames() if isinstance(e["frame"], dict) and e["frame"]["type"] == "channel.input"]
    chunks = [e["frame"]["chunk"] for e in entries]
    assert all(c["mime_type"] == "audio/pcm" and c["sample_rate_hz"] == 24000 and c["channels"] == 1 for c in chunks)
    got = srv.input_pcm()
    # 40 ms frames of the WAV, bit-exact, until the server's VAD committed the turn.
    assert len(got) == 1920 * len(chunks) and got == pcm[: len(got)]
    assert "turn_committed" in out and f"stopped sending at turn_committed ({len(chunks) * 40} ms sent)" in out
    # Paced in real time: the server received them over (n - 1) * 40 ms.
    span = entries[-1]["t"] - entries[0]["t"]
    assert span >= (len(entries) - 1) * 0.040 * 0.9, span
    assert srv.client_frames()[-1]["type"] == "channel.close"
    assert "turn_completed" in out and 'input_transcript_final "heard 2.' in out
    with wave.open(str(reply_wav), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        assert w.getnframes() * 1000 // 24000 == srv.items()[0]["sent_ms"]


def test_wav_turn_with_explicit_commit(server, capsys):
    srv = server(surface="v2")
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", srv.session_id, "--turning-mode",
                         "explicit_commit", "--wav", str(QUESTION), "--speed", "20")
    assert code == 0, out + err
    pcm = wav_pcm(QUESTION)
    assert srv.input_pcm() == pcm  # the whole file, the last frame short
    types = [f["type"] for f in srv.client_frames()]
    assert types[0] == "channel.open" and types[-2:] == ["channel.commit_turn", "channel.close"]
    assert types.count("channel.input") == -(-len(pcm) // 1920)
    assert "channel.commit_turn sent" in out and 'input_transcript_final "heard 4.5 s of audio"' in out


def test_json_prints_the_frames_verbatim(server, capsys):
    srv = server(surface="v2")
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", srv.session_id, "--text", "hi", "--json")
    assert code == 0, err
    frames = [json.loads(line) for line in out.splitlines()]
    assert frames == [e["frame"] for e in srv.sent_frames() if e["kind"] == "text"]
    assert frames[0]["type"] == "channel.opened" and frames[-1] == {"type": "channel.closed", "reason": "client_closed"}
    assert "meerkat-probe: ok" in err and "channel.opened" not in err


def test_open_and_close_without_input(server, capsys):
    srv = server(surface="v2")
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", srv.session_id)
    assert code == 0, err
    assert [f["type"] for f in srv.client_frames()] == ["channel.open", "channel.close"]
    assert "capabilities: " in out and "channel.closed client_closed" in out


def test_observer_watches_until_the_timeout(server, capsys):
    srv = server(surface="v2")
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--role", "observer", "--timeout", "0.3")
    assert code == 0, err
    assert "channel.opened role observer" in out and "observing for 0.3 s" in out
    # An observer exists only in protocol v2: auto goes straight there.
    assert [c["method"] for c in srv.rpc_calls()] == ["realtime/open_info"]
    with pytest.raises(SystemExit) as exc:
        probe.main(["--rpc", rpc(srv), "--session-id", "s", "--role", "observer", "--text", "hi"])
    assert exc.value.code == 2 and "an observer may not send input" in capsys.readouterr().err


@pytest.mark.parametrize("surface", ["v2", "live"])
def test_settings_from_a_device_config(server, capsys, tmp_path, surface):
    srv = server(surface="v2") if surface == "v2" else server(**LIVE)
    cfg = json.loads((paths.FIRMWARE / "config.example.json").read_text())
    cfg["server"]["rpc"] = rpc(srv)
    cfg["server"]["surface"] = surface
    cfg["target"]["session_id"] = srv.session_id
    cfg["turning_mode"] = "explicit_commit"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    code, out, err = run(capsys, "--config", str(path), "--text", "hello")
    assert code == 0, out + err
    assert cfg["wifi"]["key"] not in out + err
    if surface == "v2":
        assert "(primary, explicit_commit)" in out and "channel.commit_turn sent" in out
    else:
        assert "(explicit_commit)" in out and "surface: live (Meerkat 0.6.5 or later)" in out
        assert methods(srv) == ["live/open", "live/commit_input", "live/close"]


# -- protocol v2: errors (non-zero, one line that says what to do) --------------------------------


NO_SUCH_SESSION = "019e0000-de00-7000-8000-000000000bad"  # a UUID no session has


def test_unknown_session(server, capsys):
    srv = server(surface="v2")
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", NO_SUCH_SESSION)
    assert code == probe.EXIT_BOOTSTRAP
    msg = one_error_line(err)
    assert f"Session not found: {NO_SUCH_SESSION} (-32001)" in msg and "pass the id of a live session" in msg
    code, out, err = run(capsys, "--rest", srv.rest_url, "--session-id", NO_SUCH_SESSION)
    assert code == probe.EXIT_BOOTSTRAP and "(SESSION_NOT_FOUND)" in one_error_line(err)
    # Not a UUID: the server's SessionId parser refuses it first (-32602).
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", "019e-no-such-session")
    assert code == probe.EXIT_BOOTSTRAP
    msg = one_error_line(err)
    assert "(-32602)" in msg and "a session id is a UUID" in msg


def test_nothing_listening(capsys):
    port = free_port()
    code, out, err = run(capsys, "--rpc", f"127.0.0.1:{port}", "--session-id", "s")
    assert code == probe.EXIT_BOOTSTRAP
    assert f"cannot reach 127.0.0.1:{port}: Connection refused: is rkat-rpc running with --tcp 127.0.0.1:{port}" in one_error_line(err)
    code, out, err = run(capsys, "--rest", f"http://127.0.0.1:{port}", "--session-id", "s")
    assert code == probe.EXIT_BOOTSTRAP and "is rkat-rest running at" in one_error_line(err)


def test_nothing_listening_from_the_command_line():
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "meerkat_tools.probe", "--rpc", f"127.0.0.1:{port}",
                           "--session-id", "s"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == probe.EXIT_BOOTSTRAP
    assert proc.stderr.splitlines()[-1].startswith(f"meerkat-probe: error: cannot reach 127.0.0.1:{port}")


def test_remote_host_hint_mentions_allow_remote():
    assert "--allow-remote" in probe._reach_hint("rpc", "192.168.1.10:9001", "192.168.1.10")
    assert "--allow-remote" not in probe._reach_hint("rpc", "127.0.0.1:9001", "127.0.0.1")


@pytest.mark.parametrize("surface", ["v2", "live"])
def test_the_websocket_port_is_not_the_rpc_port(server, capsys, surface):
    srv = server(surface=surface)
    url = srv.ws_url if surface == "v2" else srv.live_ws_url
    ws_port = url.split(":")[2].split("/")[0]
    code, out, err = run(capsys, "--rpc", f"127.0.0.1:{ws_port}", "--surface", surface, "--session-id", srv.session_id,
                         "--open-timeout", "2")
    assert code == probe.EXIT_BOOTSTRAP
    msg = one_error_line(err)
    assert "did not answer like Meerkat (it closed the connection without answering)" in msg
    assert "the rkat-rpc --tcp port (not --live-ws or --realtime-ws)" in msg
    assert srv.rpc_calls() == []


def test_capability_unavailable(server, capsys):
    srv = server(surface="v2", turning_modes=("provider_managed",))
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", srv.session_id, "--turning-mode", "explicit_commit")
    assert code == probe.EXIT_BOOTSTRAP
    msg = one_error_line(err)
    assert "(-32020)" in msg and "try --turning-mode provider_managed" in msg
    srv = server(surface="v2", faults=Faults(bootstrap_error=(-32020, "realtime bootstrap eligibility denied: session model 'gpt-4o' does not support realtime")))
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", srv.session_id)
    assert code == probe.EXIT_BOOTSTRAP and "must support realtime" in one_error_line(err)


def test_rest_proxy_without_rpc(server, capsys):
    srv = server(surface="v2", faults=Faults(rest_rpc_unreachable=True))
    code, out, err = run(capsys, "--rest", srv.rest_url, "--session-id", srv.session_id)
    assert code == probe.EXIT_BOOTSTRAP and "--realtime-rpc-tcp" in one_error_line(err)


def test_open_refused(server, capsys):
    srv = server(surface="v2", faults=Faults(open_error="runtime_not_ready"))
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", srv.session_id, "--text", "hi")
    assert code == probe.EXIT_OPEN
    assert "channel.error runtime_not_ready" in out and "channel.closed runtime_not_ready" in out
    assert "channel.open refused: runtime_not_ready: realtime open failed" in one_error_line(err)
    assert [f["type"] for f in srv.client_frames()] == ["channel.open"]  # no input after a refusal


def test_target_busy(server, capsys):
    srv = server(surface="v2")
    info = srv.open_info()
    ws = websocket.create_connection(info["ws_url"], timeout=5)
    try:
        ws.send(json.dumps({"type": "channel.open", "protocol_version": "2", "open_token": info["open_token"],
                            "role": "primary", "turning_mode": "provider_managed"}))
        assert json.loads(ws.recv())["type"] == "channel.opened"
        code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", srv.session_id)
        assert code == probe.EXIT_OPEN
        msg = one_error_line(err)
        assert "target_busy" in msg and "--role observer" in msg
        code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--role", "observer", "--timeout", "0.2")
        assert code == 0, err
    finally:
        ws.close()


def test_channel_that_never_opens(server, capsys):
    srv = server(surface="v2", faults=Faults(open_delay=1.0))
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", srv.session_id, "--open-timeout", "0.4")
    assert code == probe.EXIT_OPEN
    assert "no channel.opened within 0.4 s of channel.open" in one_error_line(err)
    srv.wait_channel_ended(timeout=5)  # the late channel.opened met a closed socket


def test_channel_failing_after_open(server, capsys):
    srv = server(surface="v2", faults=Faults(provider_error_at=0.0, provider_error_code="authentication_failed"),
                 reply_latency_ms=2000)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", srv.session_id, "--text", "hi", "--timeout", "5")
    assert code == probe.EXIT_CHANNEL
    msg = one_error_line(err)
    assert "the server ended the channel: authentication_failed" in msg


def test_no_reply_in_time(server, capsys):
    srv = server(surface="v2", reply_latency_ms=3000)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", srv.session_id, "--text", "hi", "--timeout", "0.3")
    assert code == probe.EXIT_CHANNEL
    assert "no turn_completed (or interrupted) within 0.3 s" in one_error_line(err)
    assert srv.client_frames()[-1]["type"] == "channel.close"  # closed cleanly all the same


def test_wav_in_the_wrong_format(tmp_path, capsys):
    path = tmp_path / "cd.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(bytes(4 * 441))
    code, out, err = run(capsys, "--rpc", f"127.0.0.1:{free_port()}", "--session-id", "s", "--wav", str(path))
    assert code == probe.EXIT_USAGE
    msg = one_error_line(err)
    assert "44100 Hz, 2 channel(s), 16-bit" in msg and "24 kHz mono 16-bit" in msg and "ffmpeg" in msg
    assert out == ""  # nothing was tried


def test_usage_errors(capsys):
    for argv, words in (
        (["--session-id", "s"], "--rpc HOST:PORT or --rest URL"),
        (["--rpc", "10.0.0.1", "--session-id", "s"], "use HOST:PORT"),
        (["--rest", "https://x", "--session-id", "s"], "http:// URL"),
        (["--rpc", "h:1"], "--session-id ID or --mob-id"),
        (["--rpc", "h:1", "--mob-id", "m"], "--agent-identity"),
    ):
        with pytest.raises(SystemExit) as exc:
            probe.main(argv)
        assert exc.value.code == 2
        assert words in capsys.readouterr().err


def test_ws_url_host_rewrite():
    rw = probe.rewrite_ws_host
    assert rw("ws://0.0.0.0:9002/realtime/ws", "192.168.1.10") == "ws://192.168.1.10:9002/realtime/ws"
    assert rw("ws://127.0.0.1:9002/realtime/ws", "meerkat.lan") == "ws://meerkat.lan:9002/realtime/ws"
    assert rw("ws://[::]:9002/realtime/ws", "fd00::5") == "ws://[fd00::5]:9002/realtime/ws"
    assert rw("ws://127.0.0.1:9002/realtime/ws", "127.0.0.1") == "ws://127.0.0.1:9002/realtime/ws"
    assert rw("ws://10.0.0.2:9002/realtime/ws", "192.168.1.10") == "ws://10.0.0.2:9002/realtime/ws"


# -- the live surface: turns --------------------------------------------------------------------


LIVE = dict(surface="live", id_style="short")


def live_token(srv: DevServer) -> str:
    return srv.rpc_calls("live/open")[0]["response"]["result"]["transport"]["token"]


def sent_audio(srv: DevServer) -> tuple[int, int]:
    """(bytes of PCM, chunks) of the assistant audio the server sent."""
    chunks = srv.observations(name="assistant_audio_chunk")
    return sum(len(base64.b64decode(c["data"])) for c in chunks), len(chunks)


def methods(srv: DevServer) -> list[str]:
    return [c["method"] for c in srv.rpc_calls()]


def test_live_text_turn(server, capsys):
    srv = server(**LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--text", "What is the weather?")
    assert code == 0, out + err
    token = live_token(srv)
    channel_id = srv.channels()[-1]["id"]
    # The token travels in the URL too: only its first 8 characters are ever printed.
    assert token not in out + err and f"token {token[:8]}…" in out
    assert f"url {srv.live_ws_url}?token={token[:8]}…&channel={channel_id}&format=pcm_24k_mono" in out
    lines = out.splitlines()
    assert lines[0] == f"bootstrap: live/open via rpc {rpc(srv)} for session_target {srv.session_id} (provider_managed)"
    assert lines[1] == f"live/open: channel {channel_id}, token {token[:8]}…, continuity fresh"
    assert lines[2] == "surface: live (Meerkat 0.6.5 or later; auto: live/open answered)"
    assert lines[3] == ("capabilities: audio in yes, audio out yes, text in yes, text out yes, image in yes, "
                        "video in no, transcript yes, barge-in yes, provider resume no")
    for line in ("] ready", 'text sent: "What is the weather?"', 'user_transcript_final mk_text_1 "What is the weather?"',
                 "status_changed ready", "realtime_transcript item_observed item_1 role assistant response resp_1",
                 'assistant_transcript_delta item_1 "It "', "assistant_audio_chunk item_1 ",
                 "turn_completed resp_1 end_turn (tokens in ", "live/close: closed",
                 "the server dropped the WebSocket, as it does after live/close"):
        assert line in out, line
    # The probe reads until the server drops the socket: every chunk the server sent is counted
    # (audio may trail turn_completed on this surface).
    size, chunks = sent_audio(srv)
    assert chunks > 0 and f"reply: {size // 48} ms of audio in {chunks} chunks" in out
    assert out.rstrip().endswith("meerkat-probe: ok")
    # What the server got: live/open (WebSocket transport), one text chunk on the socket, live/close.
    assert methods(srv) == ["live/open", "live/close"]
    assert srv.rpc_calls("live/open")[0]["request"]["params"] == {
        "session_id": srv.session_id, "turning_mode": "provider_managed", "transport": "websocket"}
    assert srv.rpc_calls("live/close")[0]["request"]["params"] == {"channel_id": channel_id}
    assert [e["kind"] for e in srv.frames()] == ["text"]
    assert srv.client_frames() == [{"kind": "text", "text": "What is the weather?"}]
    assert srv.channels()[-1]["status"] == "closed" and srv.channels()[-1]["end_reason"] == "live/close"


def test_live_trailing_audio_is_drained_before_live_close(server, capsys, monkeypatch):
    # turn_completed travels on the reliable lane and overtakes queued audio when the socket is
    # slow (a small server send buffer here); live/close would discard what is still queued.
    monkeypatch.setattr(probe, "DRAIN_IDLE_S", 2.0)  # wide margin on a loaded machine
    srv = server(ws_send_buffer=4096, chunk_profile="1500-2000", **LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--text", "hi")
    assert code == 0, out + err
    order = [o["observation"] for o in srv.observations()]
    assert "assistant_audio_chunk" in order[order.index("turn_completed"):], "no audio trailed turn_completed"
    item = srv.items()[0]
    size, chunks = sent_audio(srv)
    assert size // 48 == item["total_ms"] and f"reply: {item['total_ms']} ms of audio in {chunks} chunks" in out


def test_live_wav_turn_in_real_time(server, capsys, tmp_path):
    srv = server(**LIVE)
    reply_wav = tmp_path / "reply.wav"
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "live", "--session-id", srv.session_id,
                         "--wav", str(QUESTION), "--save-reply", str(reply_wav))
    assert code == 0, out + err
    pcm = wav_pcm(QUESTION)
    # Raw PCM in binary frames of 40 ms, bit-exact: the whole WAV, then 1.5 s of silence for the
    # server's VAD (no input cancels a reply on this surface, so nothing stops it early).
    assert srv.input_pcm() == pcm + bytes(1500 * 48)
    entries = srv.frames()
    assert {e["kind"] for e in entries} == {"binary"}
    sizes = [e["size"] for e in entries]
    assert sizes[:-1] == [1920] * (len(sizes) - 1) and sum(sizes) == len(pcm) + 1500 * 48
    # Paced in real time: the server received them over (n - 1) * 40 ms.
    span = entries[-1]["t"] - entries[0]["t"]
    assert span >= (len(entries) - 1) * 0.040 * 0.9, span
    assert "as binary PCM in 40 ms frames (1x real time)" in out
    assert 'user_transcript_final item_1 "heard 2.' in out and "turn_completed resp_1 end_turn" in out
    assert methods(srv) == ["live/open", "live/close"]
    size, chunks = sent_audio(srv)
    with wave.open(str(reply_wav), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        assert w.getnframes() * 2 == size and size > 0  # all the audio the server sent


def test_live_wav_turn_with_explicit_commit(server, capsys):
    srv = server(**LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--turning-mode",
                         "explicit_commit", "--wav", str(QUESTION), "--speed", "20")
    assert code == 0, out + err
    pcm = wav_pcm(QUESTION)
    assert srv.input_pcm() == pcm  # the whole file, no silence, the last frame short
    entries = srv.frames()
    assert len(entries) == -(-len(pcm) // 1920) and entries[-1]["size"] == len(pcm) % 1920
    assert methods(srv) == ["live/open", "live/commit_input", "live/close"]
    commit = srv.rpc_calls("live/commit_input")[0]
    assert commit["request"]["params"] == {"channel_id": srv.channels()[-1]["id"]}
    assert commit["response"]["result"] == {"status": "committed"}
    assert commit["t"] >= entries[-1]["t"]  # after the last audio frame
    assert srv.rpc_calls("live/open")[0]["request"]["params"]["turning_mode"] == "explicit_commit"
    assert "live/commit_input: committed" in out and 'user_transcript_final item_1 "heard 4.5 s of audio"' in out


def test_live_json_prints_the_frames_verbatim(server, capsys):
    srv = server(**LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--text", "hi", "--json")
    assert code == 0, err
    frames = [json.loads(line) for line in out.splitlines()]
    assert frames == [e["frame"] for e in srv.sent_frames() if e["kind"] == "text"]
    assert frames[0] == {"observation": "ready"} and frames[-1]["observation"] in ("turn_completed", "assistant_audio_chunk")
    assert "meerkat-probe: ok" in err and "surface: live" in err and "] ready" not in err
    assert live_token(srv) not in out + err


def test_live_open_and_close_without_input(server, capsys):
    srv = server(**LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "live", "--session-id", srv.session_id)
    assert code == 0, err
    assert methods(srv) == ["live/open", "live/close"] and srv.frames() == []
    assert "surface: live (Meerkat 0.6.5 or later)" in out and "] ready" in out and "live/close: closed" in out


def test_live_mob_member(server, capsys):
    srv = server(mob_member="crew/navigator", **LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--mob-id", "crew", "--agent-identity", "navigator",
                         "--turning-mode", "explicit_commit", "--text", "hello")
    assert code == 0, out + err
    assert "bootstrap: mob/member_live_open via rpc" in out and "for mob_member crew/navigator (explicit_commit)" in out
    assert methods(srv) == ["mob/member_live_open", "mob/member_live_control", "mob/member_live_close"]
    member = {"mob_id": "crew", "agent_identity": "navigator"}
    channel_id = srv.channels()[-1]["id"]
    assert srv.rpc_calls("mob/member_live_open")[0]["request"]["params"] == dict(
        member, turning_mode="explicit_commit", transport="websocket")
    assert srv.rpc_calls("mob/member_live_control")[0]["request"]["params"] == dict(
        member, channel_id=channel_id, verb={"verb": "commit_input"})
    assert srv.rpc_calls("mob/member_live_close")[0]["request"]["params"] == dict(member, channel_id=channel_id)
    assert srv.client_frames() == [{"kind": "text", "text": "hello"}] and "turn_completed" in out


def test_live_unknown_fields_are_noted(server, capsys):
    srv = server(faults=Faults(unknown_fields=True), **LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--text", "hi")
    assert code == 0, out + err
    assert "note: the firmware's codec reported (and will ignore) field:ready.devserver_extra, " in out


# -- auto: which surface the server speaks ----------------------------------------------------------


def test_auto_finds_protocol_v2(server, capsys):
    srv = server(**V2_IDS)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--text", "hi")
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("bootstrap: live/open via rpc")
    assert lines[1] == "live/open: Method not found: live/open (-32601): not the live surface; trying protocol v2"
    assert lines[2].startswith("bootstrap: realtime/open_info via rpc")
    assert "surface: v2 (protocol 2: Meerkat 0.6.0 to 0.6.4; live/open is not served)" in lines
    assert methods(srv) == ["live/open", "realtime/open_info"]
    assert srv.rpc_calls("live/open")[0]["response"]["error"]["code"] == -32601
    assert [f["type"] for f in srv.client_frames()] == ["channel.open", "channel.input", "channel.close"]
    assert "output_audio_chunk item_1 " in out and "channel.closed client_closed" in out


def test_auto_finds_the_live_surface(server, capsys):
    srv = server(**LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "auto", "--session-id", srv.session_id)
    assert code == 0, out + err
    assert "surface: live (Meerkat 0.6.5 or later; auto: live/open answered)" in out
    assert methods(srv) == ["live/open", "live/close"]


def test_a_surface_the_server_does_not_speak(server, capsys):
    srv = server(**LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "v2", "--session-id", srv.session_id)
    assert code == probe.EXIT_BOOTSTRAP
    msg = one_error_line(err)
    assert "has no realtime/open_info (Method not found: realtime/open_info, -32601)" in msg and "--surface live" in msg
    srv = server(surface="v2")
    code, out, err = run(capsys, "--rpc", rpc(srv), "--surface", "live", "--session-id", srv.session_id)
    assert code == probe.EXIT_BOOTSTRAP
    msg = one_error_line(err)
    assert "has no live/open (Method not found: live/open, -32601)" in msg and "--live-ws" in msg and "--surface v2" in msg
    assert methods(srv) == ["live/open"]


# -- the live surface: errors --------------------------------------------------------------------


def test_live_unknown_session(server, capsys):
    srv = server(**LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", NO_SUCH_SESSION)
    assert code == probe.EXIT_BOOTSTRAP
    msg = one_error_line(err)
    assert f"live/open refused by {rpc(srv)}: session {NO_SUCH_SESSION} not found (-32602)" in msg
    assert "pass the id of a live session" in msg
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", "019e-no-such-session")
    assert code == probe.EXIT_BOOTSTRAP
    msg = one_error_line(err)
    assert "invalid session_id" in msg and "a session id is a UUID" in msg


def test_live_unknown_mob_member(server, capsys):
    srv = server(mob_member="crew/navigator", **LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--mob-id", "crew", "--agent-identity", "pilot")
    assert code == probe.EXIT_BOOTSTRAP
    msg = one_error_line(err)
    assert "mob/member_live_open refused by" in msg and "has no member pilot (-32602)" in msg
    assert "check --mob-id and --agent-identity" in msg


def test_live_open_refused(server, capsys):
    srv = server(faults=Faults(open_error="runtime_not_ready"), **LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--text", "hi")
    assert code == probe.EXIT_BOOTSTRAP
    msg = one_error_line(err)
    assert "live/open refused by" in msg and "failed to open provider session" in msg and "(-32603)" in msg
    assert "OpenAI credentials" in msg
    assert methods(srv) == ["live/open"] and srv.frames() == []


def test_live_open_too_slow(server, capsys):
    srv = server(faults=Faults(open_delay=1.0), **LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--open-timeout", "0.3")
    assert code == probe.EXIT_BOOTSTRAP
    msg = one_error_line(err)
    assert f"no answer to live/open from {rpc(srv)} within 0.3 s" in msg and "try a longer --open-timeout" in msg
    # The late answer still opened a channel, which holds the session (as on the real server).
    srv.wait_for(lambda: srv.channels(), timeout=5, what="the late channel")
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id)
    assert code == probe.EXIT_BOOTSTRAP and "already has an active live channel" in one_error_line(err)


def test_live_session_already_has_a_channel(server, capsys):
    srv = server(**LIVE)
    srv.live_open()  # a channel whose WebSocket never comes: it holds the session
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id)
    assert code == probe.EXIT_BOOTSTRAP
    msg = one_error_line(err)
    assert "already has an active live channel (-32602)" in msg and "live/close" in msg


@pytest.mark.parametrize("fault, reason, hint", [
    ("expire", "token expired", "the token lives 60 s from live/open"),
    ("consume", "token already consumed", "tokens are single use"),
])
def test_live_token_refused(server, capsys, fault, reason, hint):
    srv = server(faults=Faults(token_fault=fault), **LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--text", "hi")
    assert code == probe.EXIT_OPEN
    assert f"error frame: invalid_token ({reason})" in out
    msg = one_error_line(err)
    assert f"the WebSocket refused the token: invalid_token ({reason}, then close 1008 invalid_token): {hint}" in msg
    # The server leaves the channel open after a refused token: the probe closes it.
    assert methods(srv) == ["live/open", "live/close"]
    assert srv.rpc_calls("live/close")[0]["response"]["result"] == {"status": "closed"}
    assert "live/close: closed (a refused token leaves the channel open)" in out
    assert srv.channels()[-1]["status"] == "closed" and srv.frames() == []
    assert live_token(srv) not in out + err


def test_live_channel_that_never_gets_ready(server, capsys):
    srv = server(faults=Faults(ready_delay=30.0), **LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--text", "hi",
                         "--open-timeout", "0.4")
    assert code == probe.EXIT_OPEN
    assert "no ready observation within 0.4 s of the WebSocket upgrade" in one_error_line(err)
    assert methods(srv) == ["live/open", "live/close"] and srv.frames() == []  # nothing sent before ready
    srv.wait_channel_ended(timeout=5)


@contextlib.contextmanager
def once_the_input_is_in(srv: DevServer, action):
    """Run action() from a helper thread once the server has received the probe's first input
    frame (so a fault cannot race the input), and re-raise what it raised."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            srv.wait_for(lambda: srv.frames(), timeout=10, what="the probe's input")
            action()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=15)
    assert not thread.is_alive(), "the fault thread did not finish"
    if failure:
        raise failure[0]


def test_live_channel_failing_after_ready(server, capsys):
    # Meerkat 0.7.0 and later: a terminal error drops the socket with nothing published.
    srv = server(reply_latency_ms=5000, **LIVE)
    with once_the_input_is_in(srv, srv.force_provider_error):
        code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--text", "hi", "--timeout", "10")
    assert code == probe.EXIT_CHANNEL
    msg = one_error_line(err)
    assert "the server ended the channel: the server dropped the WebSocket without a reason: since Meerkat 0.7.0" in msg
    assert msg.endswith("(live/status: closed)")
    assert methods(srv) == ["live/open", "live/status"]
    assert "turn_completed" not in out


def test_live_channel_failing_with_a_published_error(server, capsys):
    # Meerkat 0.6.5 to 0.6.x: the error observation, then Close 1008.
    srv = server(reply_latency_ms=5000, live_terminal="publish", **LIVE)
    with once_the_input_is_in(srv, lambda: srv.force_provider_error(message="provider error: rate limited")):
        code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--text", "hi", "--timeout", "10")
    assert code == probe.EXIT_CHANNEL
    assert "] error provider_error: provider error: rate limited" in out
    msg = one_error_line(err)
    assert "the server ended the channel: provider_error: provider error: rate limited (close 1008 terminal:provider_error)" in msg
    assert msg.endswith("(live/status: closed)")


def test_live_provider_session_ending(server, capsys):
    srv = server(reply_latency_ms=5000, **LIVE)
    with once_the_input_is_in(srv, srv.force_provider_close):
        code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--text", "hi", "--timeout", "10")
    assert code == probe.EXIT_CHANNEL
    assert "] status_changed closed" in out
    assert "the provider session ended (status_changed closed)" in one_error_line(err)


def test_live_no_reply_in_time(server, capsys):
    srv = server(reply_latency_ms=3000, **LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--text", "hi", "--timeout", "0.3")
    assert code == probe.EXIT_CHANNEL
    assert "no turn_completed within 0.3 s" in one_error_line(err)
    assert methods(srv) == ["live/open", "live/close"]  # closed cleanly all the same


def test_live_usage_errors(capsys):
    for argv, words in (
        (["--rest", "http://h:1", "--surface", "live", "--session-id", "s"], "the live surface has no REST routes"),
        (["--rpc", "h:1", "--surface", "live", "--role", "observer", "--session-id", "s"], "no observer role"),
    ):
        with pytest.raises(SystemExit) as exc:
            probe.main(argv)
        assert exc.value.code == 2
        assert words in capsys.readouterr().err


def test_live_url_host_rewrite():
    rw = probe.rewrite_ws_host
    url = "ws://0.0.0.0:4900/live/ws?token=t&channel=c&format=pcm_24k_mono"
    assert rw(url, "192.168.1.10") == "ws://192.168.1.10:4900/live/ws?token=t&channel=c&format=pcm_24k_mono"
    assert rw("ws://127.0.0.1:4900?token=t", "meerkat.lan") == "ws://meerkat.lan:4900?token=t"


def test_live_tool_call_then_its_continuation(server, capsys):
    # The response that calls the tool ends in turn_completed{tool_use} (or none); the probe waits
    # for the continuation's turn_completed.
    srv = server(tool_trigger="weather", tool_duration_ms=200, **LIVE)
    code, out, err = run(capsys, "--rpc", rpc(srv), "--session-id", srv.session_id, "--text", "What is the weather?")
    assert code == 0, out + err
    assert 'tool_call_requested get_weather {"city": "Lisbon"} (' in out
    completed = srv.observations(name="turn_completed")
    assert completed and completed[-1]["stop_reason"] == "end_turn"
    assert [o["stop_reason"] for o in completed[:-1]] in ([], ["tool_use"])
    assert f"turn_completed {completed[-1]['response_id']} end_turn" in out
    assert out.index("tool_call_requested") < out.index("live/close: closed")
