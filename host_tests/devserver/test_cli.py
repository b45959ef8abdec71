"""`meerkat-devserver` as a subprocess: its JSON line, a bootstrap, a channel, a clean exit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from ._client import Channel, RpcClient, open_frame, silence

REPO = Path(__file__).resolve().parents[2]


def command() -> list[str]:
    script = Path(sys.executable).with_name("meerkat-devserver")
    if script.exists():
        return [str(script)]
    found = shutil.which("meerkat-devserver")
    return [found] if found else [sys.executable, "-m", "meerkat_tools.devserver.cli"]


def start(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO / "tools"))
    return subprocess.Popen(
        command() + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_command_answers_a_client(tmp_path):
    proc = start("--surface", "v2", "--record", str(tmp_path), "--reply-speed", "0", "--reply-latency-ms", "0",
                 "--token-ttl", "30")
    try:
        line = proc.stdout.readline()
        ready = json.loads(line)
        assert list(ready) == ["surface", "rpc", "rest", "ws_url", "session_id"]
        assert ready["surface"] == "v2"
        assert ready["rest"].startswith("http://127.0.0.1:")
        assert ready["ws_url"].startswith("ws://127.0.0.1:") and ready["ws_url"].endswith("/realtime/ws")
        host, port = ready["rpc"].rsplit(":", 1)
        client = RpcClient((host, int(port)))
        params = {"target": {"type": "session_target", "session_id": ready["session_id"]},
                  "role": "primary", "turning_mode": "provider_managed"}
        info = client.request("realtime/open_info", params)["result"]
        client.close()
        assert info["ws_url"] == ready["ws_url"]
        ch = Channel(info["ws_url"])
        ch.send(open_frame(info["open_token"]))
        assert ch.recv()["type"] == "channel.opened"
        ch.send_audio(silence(40))
        ch.send_text("hello from the test")
        ch.recv_event("turn_completed")
        ch.send({"type": "channel.close"})
        assert ch.recv() == {"type": "channel.closed", "reason": "client_closed"}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out == ""  # exactly one line on stdout (read above)
    assert "devserver ready" in err
    assert info["open_token"] not in err  # tokens are never logged in full
    assert (tmp_path / "frames.jsonl").read_text().count("\n") == 4
    with wave.open(str(tmp_path / "input.wav"), "rb") as wav:
        assert wav.getnframes() == 960
    rpc_lines = [json.loads(line) for line in (tmp_path / "rpc.jsonl").read_text().splitlines()]
    assert [entry["method"] for entry in rpc_lines] == ["realtime/open_info"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--host", "0.0.0.0"], "not a loopback address"),
        (["--reply-wav", "__16k__"], "24000 Hz, mono, 16-bit"),
        (["--turning-modes", "sometimes"], "unknown turning mode"),
    ],
)
def test_command_refuses_bad_options(tmp_path, args, message):
    if "__16k__" in args:
        path = tmp_path / "16k.wav"
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(16000)
            wav.writeframes(b"\x00\x00" * 16)
        args = [str(path) if a == "__16k__" else a for a in args]
    proc = start(*args)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert out == ""
    assert message in err


@pytest.mark.parametrize("surface", [None, "both"])
def test_command_live_and_both_surfaces(surface):
    args = ["--reply-speed", "0", "--reply-latency-ms", "0", "--mob-member", "crew/navigator"]
    if surface:
        args += ["--surface", surface]
    proc = start(*args)
    try:
        ready = json.loads(proc.stdout.readline())
        expected = ["surface", "rpc", "live_ws", "session_id", "mob_member", "mob_session_id"]
        if surface == "both":
            expected[2:2] = ["rest", "ws_url"]
        assert list(ready) == expected
        assert ready["surface"] == (surface or "live")  # live is the default: today's Meerkat
        assert ready["live_ws"].startswith("ws://127.0.0.1:") and ready["live_ws"].endswith("/live/ws")
        assert ready["mob_member"] == "crew/navigator"
        host, port = ready["rpc"].rsplit(":", 1)
        client = RpcClient((host, int(port)))
        opened = client.request("live/open", {"session_id": ready["session_id"]})["result"]
        v2 = client.request("realtime/capabilities", {"target": {"type": "session_target",
                                                                  "session_id": ready["session_id"]}})
        client.close()
        assert ("result" in v2) == (surface == "both")
        from ._live_client import LiveSocket

        sock = LiveSocket(opened["transport"]["url"])
        assert sock.recv() == {"observation": "ready"}
        sock.send_text("hello")
        sock.recv_obs("turn_completed")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert opened["transport"]["token"] not in err  # tokens are never logged in full


def test_help_documents_surfaces_and_defaults():
    proc = subprocess.run(command() + ["--help"], capture_output=True, text=True, timeout=20,
                          env=dict(os.environ, PYTHONPATH=str(REPO / "tools")))
    assert proc.returncode == 0
    for text in ("--surface", "{live,v2,both}", "--item-ids", "EXTENSION", "--chunk-ms", "500-2000",
                 "--cancel-latency-ms", "--tool-every", "--live-terminal", "--token-fault", "--ready-delay"):
        assert text in proc.stdout, text
