"""The live REPL: meerkat_rt.start() runs the device with micropython-lib's aiorepl beside it,
on the simulated board (frozen32 at 110K where it can be built: the no-PSRAM budget), driven
through the board's standard input while it holds a conversation with the dev server.

aiorepl comes from the MicroPython source the images are built from (not from this repository);
without that source these tests skip, saying so."""

from __future__ import annotations

import re

import pytest
from harness import FAST_RECONNECT, FIX, reference_image

from meerkat_tools.devserver import DevServer, ServerOptions
from meerkat_tools.sim.repl import AioreplMissing, ReplSim, aiorepl_source


@pytest.fixture(scope="module")
def aiorepl():
    try:
        return aiorepl_source()
    except AioreplMissing as exc:
        pytest.skip(f"no aiorepl to load: {exc}")


def _board(srv, tmp_path, world=None, with_aiorepl=True, **config) -> ReplSim:
    host, port = srv.rpc_address
    cfg = {"server": {"rpc": f"{host}:{port}", "timeout_ms": 5000, "open_timeout_ms": 10000}, "target": srv.target,
           "board": "sim", "log_level": "info", "reconnect": dict(FAST_RECONNECT)}
    cfg.update(config)
    image, heap = reference_image()
    w = {"record": str(tmp_path / "speaker.wav")}
    w.update(world or {})
    return ReplSim(cfg, w, heap=heap, seconds=90, image=image, with_aiorepl=with_aiorepl)


def test_status_say_interrupt_close_act_on_the_running_device(tmp_path, aiorepl):
    with DevServer.running(ServerOptions(id_style="short")) as srv:
        dev = _board(srv, tmp_path)
        try:
            dev.start()
            at = dev.wait_text(r"--> ", 60).end()
            at = dev.wait_text(r"I app: channel open", 60, at).end()
            dev.type("status()\n")
            at = dev.wait_text(r"state\s+open", 20, at).end()
            dev.type('say("what is the weather in Lisbon?")\n')
            at = dev.wait_text(r"I user: what is the weather", 30, at).end()
            # The reply streams while the REPL answers: interrupt it from the prompt once a
            # good part of it has gone out (the server paces it at 4x real time).
            dev.wait_for(lambda: _audio_chunks_sent(srv) >= 8, 30, "reply audio from the server")
            dev.type("interrupt()\n")
            m = dev.wait_text(r"barge-in \(api\), heard (-?\d+) ms of (\S+)", 30, at)
            heard, item = int(m.group(1)), m.group(2)
            at = m.end()
            dev.type("status()\n")
            at = dev.wait_text(r"barge_ins\s+1", 20, at).end()
            dev.type("close()\n")
            dev.wait_text(r"I app: stopped: closed", 30, at)
            summary = dev.wait_summary(30)
        finally:
            dev.stop()
        truncates = [c for c in srv.recorder.rpc_calls("live/truncate")]
    assert summary["state"] == "closed" and summary["barge_ins"] == 1
    if heard >= 0:  # the cursor the REPL's interrupt() sent is the one the server got
        assert summary["truncates"] == [[item, heard]]
        assert len(truncates) == 1
    assert "Traceback" not in dev.text


def test_push_to_talk_from_the_repl(tmp_path, aiorepl):
    """explicit_commit: talk() opens the microphone, the simulated user speaks (the question
    WAV plays into the microphone from the start), stop() sends and commits the turn."""
    world = {"mic_wav": str(FIX / "user_question.wav")}
    with DevServer.running(ServerOptions(id_style="short")) as srv:
        dev = _board(srv, tmp_path, world, turning_mode="explicit_commit")
        try:
            dev.start()
            at = dev.wait_text(r"I app: channel open", 60).end()
            dev.type("talk()\n")
            at = dev.wait_text(r"talk\(\)", 20, at).end()
            # Hold the button until the question has been captured (the WAV is 2.4 s).
            dev.wait_for(lambda: _frames_sent(dev, srv) >= 70, 30, "the question captured and sent")
            dev.type("stop()\n")
            at = dev.wait_text(r"I user: (.+)", 30, at).end()
            dev.wait_for(lambda: _audio_chunks_sent(srv) >= 8, 30, "the reply's audio from the server")
            dev.type("status()\n")
            at = dev.wait_text(r"audio_received_ms\s+[1-9]\d{3,}", 20, at).end()  # seconds of the reply
            dev.type("close()\n")
            summary = dev.wait_summary(60)
        finally:
            dev.stop()
        commits = srv.recorder.rpc_calls("live/commit_input")
    assert summary["state"] == "closed", summary
    assert len(commits) == 1
    assert summary["frames_sent"] >= 70


def _audio_chunks_sent(srv) -> int:
    return len([f for f in srv.recorder.sent_frames() if isinstance(f.get("frame"), dict)
                and f["frame"].get("observation") == "assistant_audio_chunk"])


def _frames_sent(dev, srv) -> int:
    # The server's count of the uplink's audio frames (binary WebSocket frames on live).
    return len([f for f in srv.recorder.frames() if f.get("kind") == "binary"])


def test_start_without_aiorepl_says_so_and_runs_the_device(tmp_path):
    with DevServer.running(ServerOptions(id_style="short")) as srv:
        dev = _board(srv, tmp_path, with_aiorepl=False)
        try:
            dev.start()
            dev.wait_text(r"aiorepl is not installed \(mpremote mip install aiorepl", 60)
            dev.wait_text(r"I app: channel open", 60)
        finally:
            summary = dev.stop()  # no REPL to type close() into: the process is ended
    assert re.search(r"running without a REPL", dev.text)
    assert summary is None or summary["state"] in ("open", "closed")
